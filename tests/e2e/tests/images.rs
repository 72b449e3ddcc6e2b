//! `hack/build-images.sh` builds the Dockerfile's images: for byoc-controller and byoc-webhook
//! the same user, entrypoint, command, ports and labels as the Dockerfile's target of that name,
//! the binary at the path the Dockerfile copies it to, and a base on which it runs as that user.
//! The digests are reproducible: a second build from the same inputs in a fresh directory gives
//! the same ones. The node's images: `pause` and `test` stay up and stop at once on SIGTERM.
//! No cluster needed (the script runs on the debug binaries `make e2e` built); root is (to
//! unpack images with their owners and chroot into them).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use byoc_e2e::controller::target_dir;
use byoc_e2e::images::{Layout, dockerfile_layouts};
use byoc_e2e::{repo_root, run_command, terminate};

const IMAGES: [&str; 2] = ["byoc-controller", "byoc-webhook"];

/// Runs a command; returns its stdout, panicking with everything it printed when it fails.
fn run(cmd: &mut Command) -> String {
    run_command(cmd, None).success().stdout
}

/// `hack/build-images.sh --binaries <debug dir> --images IMAGES --out DIR`; returns NAME ->
/// (REPOSITORY, TAG, DIGEST) from its stdout.
fn build(out: &Path, images: &[&str]) -> BTreeMap<String, (String, String, String)> {
    let stdout = run(Command::new(repo_root().join("hack/build-images.sh"))
        .arg("--binaries")
        .arg(target_dir())
        .args(["--images", &images.join(",")])
        .arg("--out")
        .arg(out));
    stdout
        .lines()
        .map(
            |line| match line.split(' ').collect::<Vec<_>>().as_slice() {
                [name, repository, tag, digest] => (
                    (*name).to_owned(),
                    (
                        (*repository).to_owned(),
                        (*tag).to_owned(),
                        (*digest).to_owned(),
                    ),
                ),
                _ => panic!("stdout line is not `NAME REPOSITORY TAG DIGEST`: {line:?}\n{stdout}"),
            },
        )
        .collect()
}

fn assert_root() {
    assert!(
        run(Command::new("id").arg("-u")).trim() == "0",
        "unpacking an image (umoci unpack) and running its programs (chroot) need root"
    );
}

/// `oci-archive:DIR/NAME.tar`, the script's output for image NAME.
fn archive(dir: &Path, name: &str) -> String {
    format!("oci-archive:{}", dir.join(format!("{name}.tar")).display())
}

/// The OCI image configuration of image NAME in DIR.
fn image_config(dir: &Path, name: &str) -> serde_json::Value {
    let archive = archive(dir, name);
    serde_json::from_str(&run(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(&archive)))
    .expect("the image config is JSON")
}

/// Unpacks image NAME in DIR as a runtime would; returns its root filesystem.
fn unpack(dir: &Path, name: &str) -> PathBuf {
    let archive = archive(dir, name);
    let layout = dir.join(format!("{name}-layout"));
    let bundle = dir.join(format!("{name}-bundle"));
    run(Command::new("skopeo")
        .args(["copy", "--quiet", &archive])
        .arg(format!("oci:{}:t", layout.display())));
    run(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&bundle));
    bundle.join("rootfs")
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = target_dir().join("e2e-images").join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).expect("remove an old test dir");
    }
    std::fs::create_dir_all(&dir).expect("create the test dir");
    dir
}

#[test]
fn the_script_builds_the_dockerfile_layout_reproducibly() {
    assert_root();
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    let stages = dockerfile_layouts(&dockerfile).expect("the Dockerfile parses");
    let dir = fresh_dir("build");
    let built = build(&dir, &IMAGES);
    assert_eq!(
        built.keys().map(String::as_str).collect::<Vec<_>>(),
        IMAGES,
        "one stdout line per image"
    );

    for name in IMAGES {
        let want = stages
            .get(name)
            .unwrap_or_else(|| panic!("the Dockerfile has no target {name}"));
        assert!(
            want.unmodelled.is_empty(),
            "the Dockerfile's {name} target has instructions this check does not compare: {:?}",
            want.unmodelled
        );
        let (repository, tag, digest) = &built[name];
        assert_eq!(
            repository,
            &format!("toolforge/byoc-operator/{name}"),
            "the chart's default repository path (ghcr.io/toolforge/byoc-operator/{name})"
        );
        assert!(!tag.is_empty());
        let archive = archive(&dir, name);

        // The configuration: what a runtime takes from the image.
        let got = Layout::from_oci_config(&image_config(&dir, name)).expect("an OCI image config");
        let want_config = Layout {
            copied: Default::default(),
            ..want.clone()
        };
        assert_eq!(
            got, want_config,
            "{name}: the image config differs from the Dockerfile target"
        );
        let manifest = run(Command::new("skopeo")
            .args(["inspect", "--raw"])
            .arg(&archive));
        let sha = run(Command::new("sh")
            .arg("-c")
            .arg("skopeo inspect --raw \"$1\" | sha256sum | cut -d' ' -f1")
            .arg("sh")
            .arg(&archive));
        assert!(manifest.contains("application/vnd.oci.image"), "{manifest}");
        assert_eq!(
            digest,
            &format!("sha256:{}", sha.trim()),
            "{name}: printed digest"
        );

        // The files: unpack the image as a runtime would.
        let rootfs = unpack(&dir, name);
        let binary = std::fs::read(target_dir().join(name)).expect("the built binary");
        for path in &want.copied {
            let file = rootfs.join(path.trim_start_matches('/'));
            let meta = std::fs::metadata(&file)
                .unwrap_or_else(|e| panic!("{name}: {path} is not in the image: {e}"));
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o755,
                "{name}: {path} mode"
            );
            assert!(
                std::fs::read(&file).expect("read") == binary,
                "{name}: {path} is not the binary it was built from"
            );
        }
        let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).expect("/etc/passwd");
        let uid = want.user.split(':').next().expect("a uid");
        assert!(
            passwd.lines().any(|l| l.split(':').nth(2) == Some(uid)),
            "{name}: /etc/passwd names no user {uid} (the distroless base has nonroot):\n{passwd}"
        );
        let certs = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt"))
            .expect("the CA bundle");
        assert!(
            certs.matches("BEGIN CERTIFICATE").count() > 50,
            "{name}: the CA bundle is nearly empty"
        );
        // The entrypoint runs on the image's own glibc, as the image's user.
        let version = run(Command::new("chroot")
            .arg(format!("--userspec={}", want.user))
            .arg(&rootfs)
            .args(&want.entrypoint)
            .arg("--version"));
        assert!(
            version.starts_with(name),
            "{name} --version in the image printed {version:?}"
        );
    }

    // Reproducible: the same inputs in a fresh directory (nothing cached) give the same digests.
    let again_dir = fresh_dir("again");
    let again = build(&again_dir, &IMAGES);
    assert_eq!(again, built, "a second build gave other digests");
    for d in [dir, again_dir] {
        std::fs::remove_dir_all(d).expect("clean up");
    }
}

#[test]
fn the_node_images_stay_up_and_stop_on_sigterm() {
    assert_root();
    let dir = fresh_dir("node");
    let built = build(&dir, &["pause", "test"]);
    assert_eq!(
        built.keys().map(String::as_str).collect::<Vec<_>>(),
        ["pause", "test"]
    );
    // NAME, user, what the runtime starts (entrypoint, then command).
    let cases = [
        ("pause", "65535:65535", (vec!["/pause"], vec![])),
        ("test", "65532:65532", (vec![], vec!["/bin/pause"])),
    ];
    for (name, user, (entrypoint, cmd)) in cases {
        let layout = Layout::from_oci_config(&image_config(&dir, name)).expect("a config");
        assert_eq!(layout.user, user, "{name}: user");
        assert_eq!(layout.entrypoint, entrypoint, "{name}: entrypoint");
        assert_eq!(layout.cmd, cmd, "{name}: command");
        let rootfs = unpack(&dir, name);
        let program: Vec<&str> = entrypoint.iter().chain(&cmd).copied().collect();
        let mut child = Command::new("chroot")
            .arg(format!("--userspec={user}"))
            .arg(&rootfs)
            .args(&program)
            .spawn()
            .expect("start the image's program");
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            child.try_wait().expect("poll").is_none(),
            "{name}: {program:?} exited at once"
        );
        let asked = Instant::now();
        let status = terminate(&mut child, name);
        assert!(
            status.success() && asked.elapsed() < Duration::from_secs(5),
            "{name}: {program:?} did not exit 0 at once on SIGTERM: {status} after {:?}",
            asked.elapsed()
        );
    }
    // The test image has a shell for `kubectl exec` and commands.
    let rootfs = dir.join("test-bundle/rootfs");
    let out = run(Command::new("chroot")
        .args(["--userspec=65532:65532"])
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "echo $((6 * 7)) $(id -u)"]));
    assert_eq!(out.trim(), "42 65532");
    std::fs::remove_dir_all(dir).expect("clean up");
}
