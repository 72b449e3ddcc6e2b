//! Shell completion scripts for the `kubectl-byoc` command.

use clap::Command;
use clap_complete::Shell;

/// The command name the scripts complete.
const BIN: &str = "kubectl-byoc";

/// The completion script of `shell` for `command`.
pub fn script(shell: Shell, mut command: Command) -> String {
    // clap_complete's bash script names subcommand cases inconsistently when the binary name
    // has a '-' (its root function maps '-' to "__", its subcommand cases to "__subcmd__"), so
    // nothing after the subcommand completes. Generate it for a name without '-' and register
    // it for the real one.
    let name = match shell {
        Shell::Bash => BIN.replace('-', ""),
        _ => BIN.to_owned(),
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, &name, &mut out);
    let script = String::from_utf8_lossy(&out).into_owned();
    if name == BIN {
        return script;
    }
    script
        .lines()
        .map(|line| match line.trim_start().starts_with("complete ") {
            true => line.replace(&format!(" {name}"), &format!(" {BIN}")),
            false => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command as Process;

    fn cli() -> Command {
        Command::new("kubectl-byoc")
            .bin_name("kubectl byoc")
            .subcommand(
                Command::new("grant")
                    .arg(clap::Arg::new("expires").long("expires"))
                    .arg(clap::Arg::new("namespace")),
            )
            .subcommand(Command::new("list"))
    }

    /// Completes `words` (the last one being typed) with the bash script.
    fn bash_complete(words: &[&str]) -> Vec<String> {
        let script = script(Shell::Bash, cli());
        let program = format!(
            "{script}\nCOMP_WORDS=({words}); COMP_CWORD={cword}; \
             _kubectlbyoc kubectl-byoc {cur:?} {prev:?}; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            words = words
                .iter()
                .map(|w| format!("{w:?}"))
                .collect::<Vec<_>>()
                .join(" "),
            cword = words.len() - 1,
            cur = words[words.len() - 1],
            prev = words[words.len() - 2],
        );
        let out = Process::new("bash")
            .arg("-c")
            .arg(program)
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn bash_completes_commands_and_their_flags() {
        let script = script(Shell::Bash, cli());
        assert!(
            script.contains("complete -F _kubectlbyoc -o bashdefault -o default kubectl-byoc\n")
        );
        assert_eq!(bash_complete(&["kubectl-byoc", "gr"]), ["grant"]);
        assert_eq!(
            bash_complete(&["kubectl-byoc", "grant", "tool-a", "--exp"]),
            ["--expires"]
        );
    }

    #[test]
    fn other_shells_complete_the_binary() {
        assert!(script(Shell::Zsh, cli()).starts_with("#compdef kubectl-byoc\n"));
        assert!(script(Shell::Fish, cli()).contains("complete -c kubectl-byoc "));
    }
}
