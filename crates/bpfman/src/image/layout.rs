//! A content-addressed image store in the OCI image layout format
//! (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), so other tools (skopeo's
//! `oci:DIR:REF`) can read it too. Used for the daemon's cache and for images that
//! `bpfman image build` makes.
//!
//! Every blob is checked against its digest when stored and when read. Writes go to a
//! temporary file renamed into place, and `index.json` is rewritten the same way under
//! an advisory lock, so a crash never leaves a half-written blob or index behind.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::format::{
    Descriptor, Index, ManifestKind, OCI_INDEX, digest_hex, parse_manifest, sha256_digest,
};

/// The annotation naming an index entry (the image reference).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

pub struct Layout {
    root: PathBuf,
}

/// Holds the layout's advisory lock until dropped.
pub struct LayoutLock(File);

impl Drop for LayoutLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn io_err(what: impl std::fmt::Display, e: std::io::Error) -> Error {
    Error::internal(format!("image store: {what}: {e}"))
}

/// Writes `data` to `path` atomically (temporary file, fsync, rename).
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name().and_then(|n| n.to_str()).unwrap_or("blob")
    ));
    let mut f = File::create(&tmp).map_err(|e| io_err(format!("creating {}", tmp.display()), e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(format!("writing {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        io_err(format!("renaming into {}", path.display()), e)
    })
}

impl Layout {
    /// Opens (creating if needed) a layout rooted at `root`.
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root.join("blobs").join("sha256"))
            .map_err(|e| io_err(format!("creating {}", root.display()), e))?;
        let l = Self {
            root: root.to_path_buf(),
        };
        let marker = root.join("oci-layout");
        if !marker.exists() {
            write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !root.join("index.json").exists() {
            l.write_index(&Index {
                schema_version: 2,
                media_type: Some(OCI_INDEX.to_string()),
                manifests: Vec::new(),
                annotations: Default::default(),
            })?;
        }
        Ok(l)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the layout's lock (blocks while another process or thread holds it).
    pub fn lock(&self) -> Result<LayoutLock> {
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.root.join(".lock"))
            .map_err(|e| io_err("opening the lock file", e))?;
        f.lock().map_err(|e| io_err("locking", e))?;
        Ok(LayoutLock(f))
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        Ok(self
            .root
            .join("blobs")
            .join("sha256")
            .join(digest_hex(digest)?))
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    /// Stores `data`, checking it against `expected` first. Returns its digest.
    pub fn put_blob(&self, data: &[u8], expected: Option<&str>) -> Result<String> {
        let digest = sha256_digest(data);
        if let Some(exp) = expected
            && exp != digest
        {
            return Err(Error::invalid(format!(
                "content does not match its digest: expected {exp}, got {digest}; not stored"
            )));
        }
        let path = self.blob_path(&digest)?;
        if !path.exists() {
            write_atomic(&path, data)?;
        }
        Ok(digest)
    }

    /// Reads a blob and checks it against its digest.
    pub fn get_blob(&self, digest: &str) -> Result<Vec<u8>> {
        let path = self.blob_path(digest)?;
        let data = fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::not_found(format!(
                "blob {digest} is missing from the image store {}",
                self.root.display()
            )),
            _ => io_err(format!("reading {}", path.display()), e),
        })?;
        let actual = sha256_digest(&data);
        if actual != digest {
            return Err(Error::internal(format!(
                "blob {digest} in {} is corrupt (its content hashes to {actual}); remove the \
                 image and pull it again",
                self.root.display()
            )));
        }
        Ok(data)
    }

    pub fn index(&self) -> Result<Index> {
        let p = self.root.join("index.json");
        let raw = fs::read(&p).map_err(|e| io_err(format!("reading {}", p.display()), e))?;
        match parse_manifest(&raw, &p.display().to_string())? {
            ManifestKind::Index(i) => Ok(i),
            ManifestKind::Image(_) => Err(Error::internal(format!(
                "{} is not an image index",
                p.display()
            ))),
        }
    }

    fn write_index(&self, index: &Index) -> Result<()> {
        let raw = serde_json::to_vec_pretty(index)
            .map_err(|e| Error::internal(format!("encoding index.json: {e}")))?;
        write_atomic(&self.root.join("index.json"), &raw)
    }

    /// The entry named `name`, if any.
    pub fn find(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self
            .index()?
            .manifests
            .into_iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(name)))
    }

    /// Names `desc` as `name` (replacing what had the name). Caller holds the lock.
    pub fn set(&self, _lock: &LayoutLock, name: &str, mut desc: Descriptor) -> Result<()> {
        let mut index = self.index()?;
        index
            .manifests
            .retain(|d| d.annotations.get(REF_NAME).map(String::as_str) != Some(name));
        desc.annotations
            .insert(REF_NAME.to_string(), name.to_string());
        index.manifests.push(desc);
        self.write_index(&index)
    }

    /// Removes the entries that `matches` selects; returns them. Caller holds the lock.
    pub fn remove(
        &self,
        _lock: &LayoutLock,
        matches: impl Fn(&Descriptor) -> bool,
    ) -> Result<Vec<Descriptor>> {
        let mut index = self.index()?;
        let (gone, keep): (Vec<_>, Vec<_>) = index.manifests.into_iter().partition(|d| matches(d));
        index.manifests = keep;
        self.write_index(&index)?;
        Ok(gone)
    }

    /// Deletes blobs no entry reaches (manifests, their configs and layers, index
    /// children, and blobs named by `io.bpfman.*.digest` annotations). Caller holds the lock.
    pub fn gc(&self, _lock: &LayoutLock) -> Result<usize> {
        let index = self.index()?;
        let mut live = BTreeSet::new();
        let mut todo: Vec<String> = Vec::new();
        for d in &index.manifests {
            todo.push(d.digest.clone());
            for (k, v) in &d.annotations {
                if k.starts_with("io.bpfman.") && k.ends_with(".digest") {
                    todo.push(v.clone());
                }
            }
        }
        while let Some(dg) = todo.pop() {
            if !live.insert(dg.clone()) {
                continue;
            }
            let Ok(raw) = self.get_blob(&dg) else {
                continue;
            };
            if let Ok(m) = parse_manifest(&raw, "blob") {
                match m {
                    ManifestKind::Image(m) => {
                        todo.push(m.config.digest);
                        todo.extend(m.layers.into_iter().map(|l| l.digest));
                    }
                    ManifestKind::Index(i) => {
                        todo.extend(i.manifests.into_iter().map(|d| d.digest));
                    }
                }
            }
        }
        let dir = self.root.join("blobs").join("sha256");
        let mut removed = 0;
        for e in fs::read_dir(&dir).map_err(|e| io_err("listing blobs", e))? {
            let Ok(e) = e else { continue };
            let name = e.file_name().to_string_lossy().to_string();
            if !live.contains(&format!("sha256:{name}")) && fs::remove_file(e.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::format::OCI_MANIFEST;

    #[test]
    fn blobs_are_verified_and_refs_replace() {
        let dir = tempfile::tempdir().ok();
        let Some(dir) = dir else { return };
        let l = Layout::open(dir.path()).ok();
        let Some(l) = l else { panic!("open failed") };
        let d = l.put_blob(b"hello", None).unwrap_or_default();
        assert!(
            l.put_blob(b"hello", Some(&sha256_digest(b"other")))
                .is_err()
        );
        assert_eq!(l.get_blob(&d).ok().as_deref(), Some(&b"hello"[..]));
        // Corrupt the blob on disk: reading it says so.
        let p = l.blob_path(&d).unwrap_or_default();
        let _ = fs::write(&p, b"HELLO");
        let e = l
            .get_blob(&d)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("corrupt"), "{e}");
        let lock = l.lock().ok();
        let Some(lock) = lock else { panic!("lock") };
        let m = l
            .put_blob(br#"{"schemaVersion":2}"#, None)
            .unwrap_or_default();
        let desc = Descriptor {
            digest: m.clone(),
            ..Descriptor::of(OCI_MANIFEST, br#"{"schemaVersion":2}"#)
        };
        assert!(l.set(&lock, "r:1", desc.clone()).is_ok());
        assert!(l.set(&lock, "r:1", desc).is_ok());
        assert_eq!(l.index().map(|i| i.manifests.len()).ok(), Some(1));
        assert!(l.find("r:1").ok().flatten().is_some());
        assert_eq!(l.remove(&lock, |_| true).map(|g| g.len()).ok(), Some(1));
        assert!(l.gc(&lock).unwrap_or(0) >= 2);
        assert!(!l.has_blob(&m));
    }
}
