//! Writes picsift's generated fixtures: `demo OUT.zip` (the demo upload) or
//! `photos DIR COUNT WIDTH HEIGHT` (photo-like JPEGs, for benchmarks).

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["demo", out] => {
            std::fs::write(out, picsift_tests::demo_zip())
                .with_context(|| format!("cannot write {out}"))?;
            eprintln!("wrote {out}");
        }
        ["photos", dir, count, width, height] => {
            std::fs::create_dir_all(dir)?;
            let (count, w, h): (u64, u32, u32) = (count.parse()?, width.parse()?, height.parse()?);
            for i in 0..count {
                let path = format!("{dir}/photo_{i:04}.jpg");
                std::fs::write(&path, picsift_tests::jpeg(10_000 + i, w, h))?;
            }
            eprintln!("wrote {count} JPEGs of {w}x{h} to {dir}");
        }
        _ => bail!(
            "usage: picsift-fixtures demo OUT.zip | picsift-fixtures photos DIR COUNT WIDTH HEIGHT"
        ),
    }
    Ok(())
}
