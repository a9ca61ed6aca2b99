//! Opening the files callers name, as the callers themselves.
//!
//! The daemon runs as root; a caller is not. Whatever file a request names (bytecode,
//! a uprobe target) is opened on a short-lived thread whose filesystem credentials are
//! the caller's (`setfsuid`, `setfsgid` and the caller's supplementary groups, set with
//! the raw syscalls so that only that thread changes), so the kernel's own permission
//! checks decide what the caller may read, and an error says no more than the caller
//! could learn by trying the open itself.
//!
//! On top of that every open is confined with `openat2`:
//! * `Beneath(dir)`: the path must resolve inside `dir` (`RESOLVE_BENEATH`): no
//!   absolute symlink, no `..`, no symlink that leads out;
//! * `InRoot(dir)`: `dir` is the root (`RESOLVE_IN_ROOT`), as for a file inside a
//!   container reached through `/proc/<pid>/root`: absolute symlinks resolve inside it;
//! * `Anywhere`: any path the caller can open.
//!
//! Magic links (`/proc/*/fd/*`, `/proc/*/root`, ...) are never followed
//! (`RESOLVE_NO_MAGICLINKS`). Files are opened non-blocking (a FIFO cannot hold the
//! thread), must be regular files, must be under a size cap, and the whole open and read
//! runs against a deadline: a request whose file hangs (a FUSE or network file system)
//! fails and holds nothing another caller needs.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

use crate::error::{Error, Result};

/// Whose permissions an open runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary may be among them).
    pub groups: Vec<u32>,
}

impl Identity {
    pub fn root() -> Self {
        Self {
            uid: 0,
            gid: 0,
            groups: vec![0],
        }
    }
}

/// Where a path may lead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confine {
    /// Inside this directory; nothing may lead out of it.
    Beneath(PathBuf),
    /// With this directory as `/` (a container's root).
    InRoot(PathBuf),
    /// Inside `dir` as the container whose root is `root` sees it: `dir` is resolved
    /// with `root` as `/`, and nothing may lead out of `dir` from there.
    BeneathInRoot { root: PathBuf, dir: PathBuf },
    /// Any path the caller can open (root, or a rule without a directory restriction).
    Anywhere,
}

/// Bounds on one open.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_bytes: u64,
    pub deadline: Duration,
}

/// A regular file, open, with what it is.
#[derive(Debug)]
pub struct Opened {
    pub file: File,
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
}

impl Opened {
    /// The path through which the daemon reaches exactly this open file (no name the
    /// caller could swap afterwards).
    pub fn fd_path(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }

    /// `major:minor inode`, as `/proc/*/maps` names a file.
    pub fn identity(&self) -> String {
        format!(
            "{:x}:{:x} {}",
            nix::sys::stat::major(self.dev),
            nix::sys::stat::minor(self.dev),
            self.ino
        )
    }
}

/// The longest path accepted anywhere (PATH_MAX).
pub const MAX_PATH: usize = 4096;

/// Checks a caller-supplied absolute path before anything uses it: absolute, no NUL,
/// at most PATH_MAX bytes, and no empty, `.` or `..` component (so what the policy
/// compares is what the kernel will walk).
pub fn check_path(value: &str, what: &str) -> Result<()> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if value.len() > MAX_PATH {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; paths may be at most {MAX_PATH}",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(Error::invalid(format!("{what} contains a NUL byte")));
    }
    let Some(rest) = value.strip_prefix('/') else {
        return Err(Error::invalid(format!(
            "{what} '{value}' is relative; give an absolute path (the daemon does not know \
             the caller's working directory)"
        )));
    };
    for c in rest.split('/') {
        match c {
            "" => {
                return Err(Error::invalid(format!(
                    "{what} '{value}' has an empty component ('//' or a trailing '/')"
                )));
            }
            "." | ".." => {
                return Err(Error::invalid(format!(
                    "{what} '{value}' has a '{c}' component; give the path without '.' or '..'"
                )));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Opener threads alive at once (a thread stuck on a hung file system stays until the
/// kernel lets it go; this caps how many such threads there can be).
static OPENERS: AtomicUsize = AtomicUsize::new(0);
const MAX_OPENERS: usize = 64;

struct OpenerSlot;

impl OpenerSlot {
    fn take() -> Result<Self> {
        let n = OPENERS.fetch_add(1, Ordering::SeqCst);
        if n >= MAX_OPENERS {
            OPENERS.fetch_sub(1, Ordering::SeqCst);
            return Err(Error::exhausted(format!(
                "{MAX_OPENERS} file opens are already in progress (some file system is \
                 slow to answer); try again later"
            )));
        }
        Ok(Self)
    }
}

impl Drop for OpenerSlot {
    fn drop(&mut self) {
        OPENERS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Takes on the caller's filesystem identity, on this thread only.
fn become_caller(id: &Identity) -> std::io::Result<()> {
    if id.uid == 0 {
        return Ok(());
    }
    let groups: Vec<libc::gid_t> = id.groups.clone();
    // SAFETY: raw syscalls change the calling thread's credentials only (glibc's
    // wrappers would change every thread's); the pointer and length describe `groups`.
    unsafe {
        if libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::syscall(libc::SYS_setfsgid, id.gid);
        libc::syscall(libc::SYS_setfsuid, id.uid);
        // setfs*id report the previous value, never an error: read them back.
        let fsuid = libc::syscall(libc::SYS_setfsuid, u32::MAX) as u32;
        let fsgid = libc::syscall(libc::SYS_setfsgid, u32::MAX) as u32;
        if fsuid != id.uid || fsgid != id.gid {
            return Err(std::io::Error::other(format!(
                "setfsuid/setfsgid to {}:{} did not take (now {fsuid}:{fsgid})",
                id.uid, id.gid
            )));
        }
    }
    Ok(())
}

/// Runs `f` on a fresh thread with the caller's filesystem identity, waiting at most
/// `deadline` for it.
fn as_caller<T: Send + 'static>(
    id: &Identity,
    deadline: Duration,
    what: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let slot = OpenerSlot::take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let id = id.clone();
    std::thread::Builder::new()
        .name("bpfman-open".into())
        .spawn(move || {
            let _slot = slot;
            let r = match become_caller(&id) {
                Ok(()) => f(),
                Err(e) => Err(Error::internal(format!(
                    "taking on uid {} to open a file: {e}",
                    id.uid
                ))),
            };
            let _ = tx.send(r);
        })
        .map_err(|e| Error::exhausted(format!("starting a thread to open {what}: {e}")))?;
    match rx.recv_timeout(deadline) {
        Ok(r) => r,
        Err(_) => Err(Error::precondition(format!(
            "opening {what} did not finish within {} s (a hung or slow file system?); \
             nothing was done",
            deadline.as_secs()
        ))),
    }
}

fn kind_of(m: &std::fs::Metadata) -> &'static str {
    let t = m.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_symlink() {
        "a symlink"
    } else {
        "not a regular file"
    }
}

fn open_errno(e: nix::errno::Errno, path: &Path, confine: &Confine, uid: u32) -> Error {
    use nix::errno::Errno;
    let p = path.display();
    match (e, confine) {
        (Errno::ENOENT, _) => Error::not_found(format!("{p} does not exist")),
        (Errno::EACCES | Errno::EPERM, _) => Error::denied(format!(
            "uid {uid} may not open {p} (the file's permissions are checked as the caller's)"
        )),
        (Errno::EXDEV, Confine::Beneath(d) | Confine::BeneathInRoot { dir: d, .. }) => {
            Error::denied(format!(
                "{p} leads outside {} (a symlink or mount out of the granted directory); \
             give the real path of a file inside it",
                d.display()
            ))
        }
        (Errno::EXDEV | Errno::ELOOP, _) => Error::denied(format!(
            "{p} goes through a link the daemon does not follow (/proc magic links, or too \
             many symlinks)"
        )),
        (Errno::ENXIO | Errno::ENODEV | Errno::EOPNOTSUPP, _) => {
            Error::invalid(format!("{p} is not a regular file"))
        }
        (Errno::ENOTDIR, _) => Error::not_found(format!("{p}: a component is not a directory")),
        (Errno::ENAMETOOLONG, _) => Error::invalid(format!("{p}: name too long")),
        (Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM, _) => {
            Error::exhausted(format!("opening {p}: {e}; try again later"))
        }
        (Errno::ENOSYS, _) => Error::unsupported(format!(
            "opening {p}: this kernel has no openat2 (needs Linux 5.6)"
        )),
        _ => Error::invalid(format!("opening {p}: {e}")),
    }
}

/// `path` relative to `dir`, which it must be strictly inside.
fn inside<'a>(path: &'a Path, dir: &Path) -> Result<&'a Path> {
    let rel = path.strip_prefix(dir).map_err(|_| {
        Error::denied(format!(
            "{} is not inside {}",
            path.display(),
            dir.display()
        ))
    })?;
    if rel.as_os_str().is_empty() {
        return Err(Error::invalid(format!(
            "{} names a directory, not a file",
            path.display()
        )));
    }
    Ok(rel)
}

/// Opens `path` on this thread (credentials already the caller's).
fn open_here(path: &Path, confine: &Confine, uid: u32, max_bytes: u64) -> Result<Opened> {
    let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let resolve = |extra: ResolveFlag| {
        OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS | extra)
    };
    let fd: OwnedFd = match confine {
        Confine::Anywhere => {
            nix::fcntl::openat2(nix::fcntl::AT_FDCWD, path, resolve(ResolveFlag::empty()))
                .map_err(|e| open_errno(e, path, confine, uid))?
        }
        Confine::Beneath(dir) | Confine::InRoot(dir) => {
            let (rel, how) = match confine {
                Confine::Beneath(_) => (inside(path, dir)?, resolve(ResolveFlag::RESOLVE_BENEATH)),
                _ => (
                    path.strip_prefix("/").unwrap_or(path),
                    resolve(ResolveFlag::RESOLVE_IN_ROOT),
                ),
            };
            // The directory itself is the admin's (a granted directory) or the kernel's
            // (a container root): opened as the caller, following what it names.
            let dirfd = nix::fcntl::open(
                dir.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| open_errno(e, dir, &Confine::Anywhere, uid))?;
            if rel.as_os_str().is_empty() {
                return Err(Error::invalid(format!(
                    "{} names a directory, not a file",
                    path.display()
                )));
            }
            nix::fcntl::openat2(dirfd.as_fd(), rel, how)
                .map_err(|e| open_errno(e, path, confine, uid))?
        }
        Confine::BeneathInRoot { root, dir } => {
            let rel = inside(path, dir)?;
            let rootfd = nix::fcntl::open(
                root.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| open_errno(e, root, &Confine::Anywhere, uid))?;
            // The granted directory as the container sees it (its symlinks stay in the
            // container), then the file beneath it.
            let dirfd = nix::fcntl::openat2(
                rootfd.as_fd(),
                dir.strip_prefix("/").unwrap_or(dir),
                OpenHow::new()
                    .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                    .resolve(ResolveFlag::RESOLVE_NO_MAGICLINKS | ResolveFlag::RESOLVE_IN_ROOT),
            )
            .map_err(|e| open_errno(e, dir, &Confine::InRoot(root.clone()), uid))?;
            nix::fcntl::openat2(dirfd.as_fd(), rel, resolve(ResolveFlag::RESOLVE_BENEATH))
                .map_err(|e| open_errno(e, path, confine, uid))?
        }
    };
    // SAFETY: `fd` is a freshly opened, owned descriptor.
    let file = unsafe { File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    let md = file
        .metadata()
        .map_err(|e| Error::internal(format!("fstat of {}: {e}", path.display())))?;
    if !md.file_type().is_file() {
        return Err(Error::invalid(format!(
            "{} is {}; give a regular file",
            path.display(),
            kind_of(&md)
        )));
    }
    if md.len() > max_bytes {
        return Err(Error::invalid(format!(
            "{} is {} bytes; the daemon accepts files of at most {max_bytes} bytes",
            path.display(),
            md.len()
        )));
    }
    Ok(Opened {
        size: md.len(),
        dev: md.dev(),
        ino: md.ino(),
        file,
    })
}

/// Opens a regular file as `id`, confined as `confine` says.
pub fn open(id: &Identity, path: &Path, confine: &Confine, limits: Limits) -> Result<Opened> {
    let (p, c, uid) = (path.to_path_buf(), confine.clone(), id.uid);
    as_caller(
        id,
        limits.deadline,
        &path.display().to_string(),
        move || open_here(&p, &c, uid, limits.max_bytes),
    )
}

/// The bytes of callers' files held in memory at once, all requests together: each read
/// takes its file's size from it before allocating, and gives it back when the request
/// is done with the bytes.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    used: std::sync::Mutex<u64>,
}

/// A share of a [`Budget`], given back on drop.
#[derive(Debug)]
pub struct Held {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Budget {
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: std::sync::Mutex::new(0),
        })
    }

    fn used(&self) -> std::sync::MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `bytes` of the budget, or an error saying it is spent (try again later).
    pub fn take(self: &Arc<Self>, bytes: u64, what: &str) -> Result<Held> {
        let mut used = self.used();
        if used.saturating_add(bytes) > self.limit {
            return Err(Error::exhausted(format!(
                "{what} is {bytes} bytes and other requests hold {} of the {} bytes of \
                 bytecode the daemon keeps in memory at once ([daemon] \
                 max_bytecode_bytes_in_flight); try again later",
                *used, self.limit
            )));
        }
        *used += bytes;
        Ok(Held {
            budget: Arc::clone(self),
            bytes,
        })
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        *self.used()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut used = self.budget.used();
        *used = used.saturating_sub(self.bytes);
    }
}

/// Bytes read under a [`Budget`]: the share is held as long as they are.
#[derive(Debug)]
pub struct Bytes {
    data: Vec<u8>,
    _held: Held,
}

impl Bytes {
    pub fn new(data: Vec<u8>, held: Held) -> Self {
        Self { data, _held: held }
    }
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

/// Opens and reads a regular file as `id` (at most `limits.max_bytes`), holding its
/// size of `budget` from before the read until the returned bytes are dropped.
pub fn read_budgeted(
    id: &Identity,
    path: &Path,
    confine: &Confine,
    limits: Limits,
    budget: &Arc<Budget>,
) -> Result<Bytes> {
    let (data, held) = read_as(id, path, confine, limits, Some(Arc::clone(budget)))?;
    match held {
        Some(held) => Ok(Bytes::new(data, held)),
        None => Err(Error::internal(
            "a budgeted read came back without its share",
        )),
    }
}

/// Opens and reads a regular file as `id` (at most `limits.max_bytes`).
pub fn read(id: &Identity, path: &Path, confine: &Confine, limits: Limits) -> Result<Vec<u8>> {
    read_as(id, path, confine, limits, None).map(|(data, _)| data)
}

fn read_as(
    id: &Identity,
    path: &Path,
    confine: &Confine,
    limits: Limits,
    budget: Option<Arc<Budget>>,
) -> Result<(Vec<u8>, Option<Held>)> {
    let (p, c, uid) = (path.to_path_buf(), confine.clone(), id.uid);
    as_caller(
        id,
        limits.deadline,
        &path.display().to_string(),
        move || {
            let o = open_here(&p, &c, uid, limits.max_bytes)?;
            let held = match &budget {
                Some(b) => Some(b.take(o.size, &p.display().to_string())?),
                None => None,
            };
            let mut bytes = Vec::with_capacity(o.size as usize);
            (&o.file)
                .take(limits.max_bytes + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::invalid(format!("reading {}: {e}", p.display())))?;
            if bytes.len() as u64 > limits.max_bytes {
                return Err(Error::invalid(format!(
                    "{} grew past {} bytes while being read",
                    p.display(),
                    limits.max_bytes
                )));
            }
            Ok((bytes, held))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_shared_and_given_back() {
        let b = Budget::new(100);
        let one = b.take(60, "a").ok();
        assert!(one.is_some());
        let e = b.take(50, "b").err();
        assert!(
            e.as_ref()
                .is_some_and(|e| e.message().contains("max_bytecode_bytes_in_flight")),
            "{e:?}"
        );
        let two = b.take(40, "c").ok();
        assert_eq!(b.in_use(), 100);
        drop(one);
        assert_eq!(b.in_use(), 40);
        drop(two);
        assert_eq!(b.in_use(), 0);
        assert!(b.take(101, "d").is_err());
    }

    #[test]
    fn paths_with_dot_components_are_refused() {
        for bad in [
            "", "x.o", "./x.o", "/a/../b", "/a/./b", "/a//b", "/a/b/", "/a/b/..", "/..", "/a/\0b",
        ] {
            assert!(check_path(bad, "path").is_err(), "{bad:?} passed");
        }
        for good in ["/a", "/a/b.o", "/a/..b/c", "/a/b../c", "/.hidden/x"] {
            assert!(check_path(good, "path").is_ok(), "{good:?} refused");
        }
        assert!(check_path(&format!("/{}", "a".repeat(MAX_PATH)), "p").is_err());
    }

    fn limits() -> Limits {
        Limits {
            max_bytes: 1 << 20,
            deadline: Duration::from_secs(5),
        }
    }

    #[test]
    fn confinement_and_file_kinds() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::internal(e.to_string()))?;
        let base = dir.path().join("granted");
        std::fs::create_dir(&base).map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(base.join("ok.o"), b"hello").map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(dir.path().join("outside.o"), b"secret")
            .map_err(|e| Error::internal(e.to_string()))?;
        std::os::unix::fs::symlink(dir.path().join("outside.o"), base.join("abs-link.o"))
            .map_err(|e| Error::internal(e.to_string()))?;
        std::os::unix::fs::symlink("../outside.o", base.join("rel-link.o"))
            .map_err(|e| Error::internal(e.to_string()))?;
        std::os::unix::fs::symlink("ok.o", base.join("inside-link.o"))
            .map_err(|e| Error::internal(e.to_string()))?;
        std::os::unix::fs::symlink("/proc/self/root/etc/hostname", base.join("magic.o"))
            .map_err(|e| Error::internal(e.to_string()))?;
        nix::unistd::mkfifo(
            &base.join("fifo.o"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| Error::internal(e.to_string()))?;
        let me = Identity {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            groups: vec![nix::unistd::getgid().as_raw()],
        };
        let beneath = Confine::Beneath(base.clone());
        assert_eq!(read(&me, &base.join("ok.o"), &beneath, limits())?, b"hello");
        assert_eq!(
            read(&me, &base.join("inside-link.o"), &beneath, limits())?,
            b"hello"
        );
        for escape in ["abs-link.o", "rel-link.o", "magic.o"] {
            let e = read(&me, &base.join(escape), &beneath, limits());
            assert!(e.is_err(), "{escape} escaped");
        }
        // Anywhere still refuses magic links.
        assert!(read(&me, &base.join("magic.o"), &Confine::Anywhere, limits()).is_err());
        // A FIFO neither blocks nor loads.
        let e = read(&me, &base.join("fifo.o"), &beneath, limits());
        assert!(
            e.as_ref()
                .err()
                .is_some_and(|e| e.message().contains("FIFO")),
            "{e:?}"
        );
        // Directories, devices and oversize files are refused.
        assert!(read(&me, &base, &Confine::Anywhere, limits()).is_err());
        assert!(read(&me, Path::new("/dev/zero"), &Confine::Anywhere, limits()).is_err());
        let small = Limits {
            max_bytes: 3,
            deadline: Duration::from_secs(5),
        };
        assert!(read(&me, &base.join("ok.o"), &beneath, small).is_err());
        // A container-style root: absolute symlinks resolve inside it.
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib"))
            .map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(root.join("usr/lib/libx.so"), b"inner")
            .map_err(|e| Error::internal(e.to_string()))?;
        std::os::unix::fs::symlink("/usr/lib/libx.so", root.join("usr/lib/link.so"))
            .map_err(|e| Error::internal(e.to_string()))?;
        let o = open(
            &me,
            Path::new("/usr/lib/link.so"),
            &Confine::InRoot(root.clone()),
            limits(),
        )?;
        assert_eq!(o.size, 5);
        // A granted directory inside that root: the granted file opens, a symlink out of
        // the directory (to elsewhere in the container) does not.
        std::fs::create_dir_all(root.join("opt/app"))
            .map_err(|e| Error::internal(e.to_string()))?;
        std::fs::write(root.join("opt/app/own.so"), b"own")
            .map_err(|e| Error::internal(e.to_string()))?;
        std::os::unix::fs::symlink("/usr/lib/libx.so", root.join("opt/app/out.so"))
            .map_err(|e| Error::internal(e.to_string()))?;
        let granted = Confine::BeneathInRoot {
            root: root.clone(),
            dir: PathBuf::from("/opt/app"),
        };
        assert_eq!(
            open(&me, Path::new("/opt/app/own.so"), &granted, limits())?.size,
            3
        );
        assert!(open(&me, Path::new("/opt/app/out.so"), &granted, limits()).is_err());
        assert!(open(&me, Path::new("/usr/lib/libx.so"), &granted, limits()).is_err());
        Ok(())
    }
}
