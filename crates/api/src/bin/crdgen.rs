//! Prints a CustomResourceDefinition of the project as YAML: `crdgen byocgrants` or
//! `crdgen byocrequests`. `make crds` writes them to `crds/`.

use std::process::ExitCode;

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let yaml = match arg.as_deref() {
        Some("byocgrants") => byoc_api::grant::crd_yaml(),
        Some("byocrequests") => byoc_api::request::crd_yaml(),
        _ => {
            eprintln!("usage: crdgen byocgrants|byocrequests");
            return ExitCode::from(2);
        }
    };
    match yaml {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("crdgen: cannot serialize the CRD: {e}");
            ExitCode::FAILURE
        }
    }
}
