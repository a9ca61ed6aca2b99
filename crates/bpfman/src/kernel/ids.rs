//! Kernel object ids as a client sees them: whether a program or link id still opens,
//! and waiting until one no longer does.
//!
//! The kernel frees a link's id first thing when its last reference goes. Closing a
//! perf-event (tracepoint, kprobe, uprobe) link then waits out grace periods inside
//! `close()`: the program is let go after the first (~30 ms here), `close()` returns
//! after the rest (~75 ms in all; tests/kernel_order.rs shows the order). So detach
//! replies once the link id is gone, unload once the program id is, and the reaper
//! thread sits out the remaining grace periods off the request path.

use std::time::{Duration, Instant};

const BPF_PROG_GET_NEXT_ID: libc::c_long = 11;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;

/// `union bpf_attr` as the GET_NEXT_ID commands read it.
#[repr(C)]
#[derive(Default)]
struct GetNextId {
    start_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// A kind of kernel object with an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    Program,
    Link,
}

impl Object {
    fn next_id_cmd(self) -> libc::c_long {
        match self {
            Object::Program => BPF_PROG_GET_NEXT_ID,
            Object::Link => BPF_LINK_GET_NEXT_ID,
        }
    }
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Object::Program => "program",
            Object::Link => "link",
        })
    }
}

/// Whether `id` is a live `obj` now: the kernel's id table still has it, so it opens.
/// Asked with GET_NEXT_ID from `id - 1`, which takes no reference: opening the id to
/// find out would hold the object, and the asker's close could become the last one
/// (for a perf-event link, the one that waits out the grace periods).
pub fn opens(obj: Object, id: u32) -> std::io::Result<bool> {
    if id == 0 {
        return Ok(false);
    }
    let mut attr = GetNextId {
        start_id: id - 1,
        ..Default::default()
    };
    // SAFETY: `attr` is a live, correctly laid out bpf_attr prefix for the command.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            obj.next_id_cmd(),
            &mut attr as *mut GetNextId as *mut libc::c_void,
            std::mem::size_of::<GetNextId>() as libc::c_uint,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) => Ok(false), // no id above id - 1 at all
            _ => Err(e),
        };
    }
    Ok(attr.next_id == id)
}

/// Waits until `id` no longer opens as `obj`, for at most `limit`. Ok(time waited) once
/// it is gone; Err(why) when it is still there at the limit or cannot be asked.
pub fn wait_gone(obj: Object, id: u32, limit: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        match opens(obj, id) {
            Ok(false) => return Ok(start.elapsed()),
            Ok(true) => {}
            Err(e) => return Err(format!("asking whether {obj} {id} is gone: {e}")),
        }
        if start.elapsed() >= limit {
            return Err(format!(
                "{obj} {id} is still in the kernel after {limit:?} (something else holds it)"
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}
