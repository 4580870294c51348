//! Files install owns: written through a temporary file, recorded in the manifest, and never
//! over a file install did not create.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

use super::layout::Layout;
use super::manifest::{Kind, Manifest, write_file};
use super::{InstallError, say};

/// Writes a file this install owns and says what it did.
pub(super) fn install_file(
    layout: &Layout,
    m: &mut Manifest,
    system: &Path,
    bytes: &[u8],
    mode: u32,
    what: &str,
) -> Result<(), InstallError> {
    let done = put_file(layout, m, system, bytes, mode, what)?;
    say(format!(
        "{what}: {} {}",
        done.verb(),
        layout.path(system).display()
    ));
    Ok(())
}

/// What [`put_file`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Put {
    Wrote,
    Updated,
    UpToDate,
}

impl Put {
    fn verb(self) -> &'static str {
        match self {
            Put::Wrote => "wrote",
            Put::Updated => "updated",
            Put::UpToDate => "up to date:",
        }
    }
}

/// Writes a file this install owns. A file that exists with other content is replaced only if an
/// earlier install created it; anything else is the operator's and is refused.
pub(super) fn put_file(
    layout: &Layout,
    m: &mut Manifest,
    system: &Path,
    bytes: &[u8],
    mode: u32,
    what: &str,
) -> Result<Put, InstallError> {
    let real = layout.path(system);
    match fs::read(&real) {
        Ok(old) if old == bytes => return Ok(Put::UpToDate),
        Ok(_) if !m.created(system) => {
            return Err(InstallError::Refused(format!(
                "{what}: {} exists and was not written by iron-agent install; move it away first",
                real.display()
            )));
        }
        Ok(_) => {
            write_file(&real, bytes, mode)?;
            return Ok(Put::Updated);
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(InstallError::io(format!("reading {}", real.display()), e)),
    }
    if let Some(parent) = system.parent() {
        m.mkdirs(layout, parent)?;
    }
    write_file(&real, bytes, mode)?;
    m.record(system, Kind::File, false);
    Ok(Put::Wrote)
}
