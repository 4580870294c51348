//! Embeds docs/ into the binary: writes `$OUT_DIR/docs.rs` with one `include_str!` per markdown
//! page, so `iron-agent install` can put the documentation the unit's `Documentation=` points
//! to on the host without the source tree.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

pub fn generate(manifest_dir: &Path, out_dir: &Path) -> Result<(), String> {
    let docs = manifest_dir.join("../docs");
    println!("cargo:rerun-if-changed={}", docs.display());
    let mut pages = Vec::new();
    walk(&docs, &mut pages)?;
    pages.sort();
    let mut code = String::from("pub const PAGES: &[(&str, &str)] = &[\n");
    for p in &pages {
        let rel = p.strip_prefix(&docs).map_err(|e| e.to_string())?;
        let rel = rel.to_str().ok_or("docs path is not UTF-8")?;
        let abs = p
            .canonicalize()
            .map_err(|e| format!("{}: {e}", p.display()))?;
        let _ = writeln!(code, "    ({rel:?}, include_str!({:?})),", abs);
    }
    code.push_str("];\n");
    fs::write(out_dir.join("docs.rs"), code).map_err(|e| format!("writing docs.rs: {e}"))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    for e in fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
        let p = e.map_err(|e| e.to_string())?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "md") {
            out.push(p);
        }
    }
    Ok(())
}
