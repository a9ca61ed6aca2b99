//! The one owner of bpfman's layout on bpffs. Every pin path is made here, from typed
//! parts; nothing else joins path components under the bpffs root. Removals report
//! failure (a pin that is already gone is not one), so a caller never says "removed"
//! about something that is still there.
//!
//! ```text
//! <root>/prog_<id>                       a loaded program
//! <root>/maps/<owner id>/<map>           the maps of a program and its map users
//! <root>/links/<link id>                 a bpf_link (direct attachments)
//! <root>/ext/<link id>                   an extension in a dispatcher slot
//! <root>/dispatchers/<hook dir>/link     the hook's own attachment of its dispatcher
//! <root>/dispatchers/<hook dir>/<rev>/dispatcher   one revision of a dispatcher
//! <root>/dispatchers/ext-target[-tc]     the dispatcher extensions are verified against
//! ```

use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::model::HookKey;

/// Directories made at start-up.
const DIRS: [&str; 4] = ["links", "maps", "ext", "dispatchers"];

#[derive(Debug, Clone)]
pub struct Bpffs {
    root: PathBuf,
}

impl Bpffs {
    /// The layout under `root` (a mounted bpffs, or a plain directory for unit tests);
    /// creates its directories.
    pub fn new(root: &Path) -> Result<Self> {
        for d in DIRS {
            let p = root.join(d);
            std::fs::create_dir_all(&p)
                .map_err(|e| Error::daemon_io(format!("creating {}", p.display()), e))?;
        }
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn program(&self, id: u32) -> PathBuf {
        self.root.join(format!("prog_{id}"))
    }

    pub fn maps_root(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn maps(&self, owner_id: u32) -> PathBuf {
        self.maps_root().join(owner_id.to_string())
    }

    pub fn links_root(&self) -> PathBuf {
        self.root.join("links")
    }

    pub fn link(&self, link_id: u32) -> PathBuf {
        self.links_root().join(link_id.to_string())
    }

    pub fn ext_root(&self) -> PathBuf {
        self.root.join("ext")
    }

    pub fn ext(&self, link_id: u32) -> PathBuf {
        self.ext_root().join(link_id.to_string())
    }

    pub fn dispatchers_root(&self) -> PathBuf {
        self.root.join("dispatchers")
    }

    /// Where a hook's dispatcher state lives.
    pub fn dispatcher_dir(&self, hook: &HookKey) -> PathBuf {
        self.dispatchers_root().join(hook.dir_name())
    }

    /// The hook's own attachment of its dispatcher (a bpf_link for XDP and TCX).
    pub fn hook_link(&self, hook: &HookKey) -> PathBuf {
        self.dispatcher_dir(hook).join("link")
    }

    /// One revision of a hook's dispatcher: its directory and its program pin.
    pub fn revision(&self, hook: &HookKey, revision: u32) -> (PathBuf, PathBuf) {
        let dir = self.dispatcher_dir(hook).join(revision.to_string());
        let pin = dir.join("dispatcher");
        (dir, pin)
    }

    /// The dispatcher extensions of one hook kind are loaded (verified) against.
    pub fn ext_target(&self, tc: bool) -> PathBuf {
        self.dispatchers_root()
            .join(if tc { "ext-target-tc" } else { "ext-target" })
    }

    /// Removes a pin or a directory of pins. A path already gone is not a failure; any
    /// other failure is returned, naming the path.
    pub fn remove(&self, path: &Path) -> Result<()> {
        let r = match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
            Ok(_) => std::fs::remove_file(path),
            Err(e) => Err(e),
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::daemon_io(format!("removing {}", path.display()), e)),
        }
    }

    /// Whether a pin is there: only `false` when the file system says it does not
    /// exist. Any other failure to look (no fd left, say) is returned.
    pub fn present(&self, path: &Path) -> Result<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::daemon_io(
                format!("looking at {}", path.display()),
                e,
            )),
        }
    }

    /// The entries of a layout directory, by name (a missing directory has none).
    pub fn entries(&self, dir: &Path) -> Result<Vec<(String, PathBuf)>> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::daemon_io(format!("listing {}", dir.display()), e)),
        };
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| Error::daemon_io(format!("listing {}", dir.display()), e))?;
            out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Direction, HookKind};

    #[test]
    fn layout_paths_and_removal() {
        let d = tempfile::tempdir().expect("tempdir");
        let fs = Bpffs::new(d.path()).expect("layout");
        let hook = HookKey {
            kind: HookKind::Tc,
            netns: 4026531840,
            ifindex: 7,
            direction: Some(Direction::Egress),
        };
        assert_eq!(
            fs.dispatcher_dir(&hook),
            d.path().join("dispatchers/tc_4026531840_7_egress")
        );
        assert_eq!(fs.link(3), d.path().join("links/3"));
        let (rev, pin) = fs.revision(&hook, 2);
        std::fs::create_dir_all(&rev).expect("mkdir");
        std::fs::write(&pin, b"").expect("pin");
        assert!(fs.present(&pin).expect("look"));
        fs.remove(&fs.dispatcher_dir(&hook)).expect("remove");
        assert!(!fs.present(&pin).expect("look"));
        // Gone already: not a failure.
        fs.remove(&pin).expect("remove again");
        assert_eq!(fs.entries(&fs.links_root()).expect("list"), vec![]);
    }
}
