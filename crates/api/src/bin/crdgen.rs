//! Prints the ByocGrant CustomResourceDefinition as YAML; `make crds` writes it to `crds/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    print!("{}", byoc_api::grant::crd_yaml()?);
    Ok(())
}
