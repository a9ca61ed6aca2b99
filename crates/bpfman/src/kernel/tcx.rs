//! TCX attachment with `expected_revision` (aya 0.14's `LinkOrder` cannot carry one):
//! BPF_LINK_CREATE issued directly, so that the link lands where the daemon computed only
//! if nobody changed the hook in between; the kernel answers ESTALE otherwise.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
const BPF_F_BEFORE: u32 = 1 << 3;
const BPF_F_AFTER: u32 = 1 << 4;
const BPF_F_ID: u32 = 1 << 5;
const BPF_F_LINK: u32 = 1 << 13;

/// `union bpf_attr` as BPF_LINK_CREATE reads it for TCX (prefix of the union; the
/// kernel accepts a shorter attr and zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct LinkCreateTcx {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_id: u32,
    _pad: u32,
    expected_revision: u64,
}

#[repr(C)]
#[derive(Default)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

/// `union bpf_attr` as BPF_LINK_UPDATE reads it.
#[repr(C)]
#[derive(Default)]
struct LinkUpdate {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

/// Where the new program goes: before or after the program with this id, before the
/// link with this id (a link keeps its id when its program is replaced), or last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Anchor {
    Before(u32),
    After(u32),
    BeforeLink(u32),
    Last,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, correctly laid out bpf_attr prefix for `cmd`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Creates a TCX link for `prog_fd` on `ifindex`, at `anchor`, provided the hook is
/// still at `revision`.
pub fn link_create(
    prog_fd: RawFd,
    ifindex: u32,
    egress: bool,
    anchor: Anchor,
    revision: u64,
) -> std::io::Result<OwnedFd> {
    let (flags, relative_id) = match anchor {
        Anchor::Before(id) => (BPF_F_BEFORE | BPF_F_ID, id),
        Anchor::After(id) => (BPF_F_AFTER | BPF_F_ID, id),
        Anchor::BeforeLink(id) => (BPF_F_BEFORE | BPF_F_LINK | BPF_F_ID, id),
        Anchor::Last => (BPF_F_AFTER, 0),
    };
    let mut attr = LinkCreateTcx {
        prog_fd: prog_fd as u32,
        target_ifindex: ifindex,
        attach_type: if egress {
            BPF_TCX_EGRESS
        } else {
            BPF_TCX_INGRESS
        },
        flags,
        relative_id,
        expected_revision: revision,
        ..Default::default()
    };
    let fd = sys_bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Pins a bpf object (here: a link) at `path`.
pub fn pin(fd: &OwnedFd, path: &Path) -> std::io::Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut attr = ObjPin {
        pathname: c.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    sys_bpf(BPF_OBJ_PIN, &mut attr).map(|_| ())
}

/// Opens the bpf object (here: a link) pinned at `path`.
pub fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut attr = ObjPin {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Replaces the program of a link (TCX: in place, the list keeps its order and no
/// packet sees the hook without it).
pub fn link_update(link: &OwnedFd, prog_fd: RawFd) -> std::io::Result<()> {
    let mut attr = LinkUpdate {
        link_fd: link.as_raw_fd() as u32,
        new_prog_fd: prog_fd as u32,
        ..Default::default()
    };
    sys_bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attr_layout_matches_the_kernel() {
        // offsetof(union bpf_attr, link_create.tcx.expected_revision) == 24.
        assert_eq!(std::mem::size_of::<LinkCreateTcx>(), 32);
        assert_eq!(std::mem::offset_of!(LinkCreateTcx, relative_id), 16);
        assert_eq!(std::mem::offset_of!(LinkCreateTcx, expected_revision), 24);
        assert_eq!(std::mem::offset_of!(ObjPin, bpf_fd), 8);
        assert_eq!(std::mem::offset_of!(LinkUpdate, new_prog_fd), 4);
        assert_eq!(std::mem::size_of::<LinkUpdate>(), 16);
    }
}
