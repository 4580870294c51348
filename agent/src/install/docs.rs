//! The documentation `install` puts on the host: docs/ of the source tree, embedded at build
//! time (agent/build/docs.rs), written below [`DOC_DIR`]. The unit's `Documentation=` points
//! there, so `systemctl help iron-agent` opens pages that exist and match the binary.

use std::path::Path;

use super::layout::{DOC_DIR, Layout};
use super::manifest::Manifest;
use super::{InstallError, Put, put_file, say};

include!(concat!(env!("OUT_DIR"), "/docs.rs"));

pub(super) fn install(layout: &Layout, m: &mut Manifest) -> Result<(), InstallError> {
    let mut changed = 0;
    for (rel, text) in PAGES {
        let system = Path::new(DOC_DIR).join(rel);
        if put_file(layout, m, &system, text.as_bytes(), 0o644, "docs")? != Put::UpToDate {
            changed += 1;
        }
    }
    say(format!(
        "docs: {} pages in {} ({changed} written)",
        PAGES.len(),
        layout.path(DOC_DIR).display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install::layout::UNIT_TEMPLATE;

    /// The `file:` URLs of the unit's `Documentation=` line.
    fn unit_doc_urls(unit: &str) -> Vec<&str> {
        unit.lines()
            .filter_map(|l| l.strip_prefix("Documentation="))
            .flat_map(str::split_whitespace)
            .collect()
    }

    /// Every page of docs/ is embedded, and the unit names only installed pages.
    #[test]
    fn unit_points_at_installed_pages() {
        let urls = unit_doc_urls(UNIT_TEMPLATE);
        assert!(!urls.is_empty());
        for url in urls {
            let page = url
                .strip_prefix(&format!("file://{DOC_DIR}/"))
                .unwrap_or_else(|| panic!("{url} is not below file://{DOC_DIR}/"));
            assert!(
                PAGES.iter().any(|(rel, _)| *rel == page),
                "{url}: no such page"
            );
        }
        for must in [
            "README.md",
            "installation.md",
            "intercept.md",
            "sources/file.md",
        ] {
            assert!(PAGES.iter().any(|(rel, _)| *rel == must), "{must}");
        }
    }
}
