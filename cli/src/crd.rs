//! `picsift crd`: the CRD YAML generated from the Rust types.

use anyhow::Context;
use std::path::PathBuf;

/// Options of `picsift crd`.
#[derive(clap::Args)]
pub struct CrdArgs {
    /// Write the YAML into ROOT/crds and ROOT/charts/picsift/crds (a
    /// checkout's root) instead of printing it.
    #[arg(long, value_name = "ROOT")]
    write: Option<PathBuf>,
}

/// Prints every CRD as one YAML stream, or writes one file per CRD.
pub fn run(args: CrdArgs) -> anyhow::Result<()> {
    let crds = picsift_crds::crds();
    let Some(root) = args.write else {
        let docs: Vec<String> = crds.iter().map(|(_, c)| picsift_crds::to_yaml(c)).collect();
        print!("{}", docs.join("---\n"));
        return Ok(());
    };
    for dir in picsift_crds::OUTPUT_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        for (file, crd) in &crds {
            let path = dir.join(file);
            std::fs::write(&path, picsift_crds::to_yaml(crd))
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote {}", path.display());
        }
    }
    Ok(())
}
