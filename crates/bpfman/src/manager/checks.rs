//! Pure checks of what a caller sends: names, metadata, tracepoints, ELF headers, hook
//! parameters, and the process a request names (`ProcessRef`). No kernel, no store.

use super::*;

/// A process a probe is scoped to or resolved in, held by a pidfd so that a pid reused
/// by another process between the check and the attach is noticed.
pub(super) struct ProcessRef {
    pub(super) pid: i32,
    pub(super) pidfd: std::os::fd::OwnedFd,
}

impl ProcessRef {
    pub(super) fn open(pid: i32) -> Result<Self> {
        if pid <= 0 {
            return Err(Error::invalid(format!("invalid pid {pid}")));
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return Err(Error::not_found(format!("process {pid} does not exist")));
        }
        // SAFETY: fd is a fresh descriptor this function owns.
        let pidfd =
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
        Ok(Self { pid, pidfd })
    }

    /// Whether every uid of the process (real, effective, saved, filesystem) is `uid`.
    pub(super) fn belongs_to(&self, uid: u32) -> Result<bool> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .map_err(|_| Error::not_found(format!("process {} does not exist", self.pid)))?;
        let uids: Vec<u32> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|l| {
                l.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        self.alive()?;
        Ok(uids.len() == 4 && uids.iter().all(|u| *u == uid))
    }

    /// Err when the process the pidfd names has exited (its pid may now be another's).
    pub(super) fn alive(&self) -> Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: signal 0 only checks that the process exists; no info struct is passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(Error::not_found(format!(
                "process {} exited while the request was checked",
                self.pid
            )))
        }
    }

    /// Whether its mount namespace is owned by the daemon's own user namespace (set up
    /// by a privileged runtime), not by one an unprivileged user made.
    pub(super) fn mounts_owned_by_init_userns(&self) -> Result<bool> {
        use std::os::fd::{AsRawFd, FromRawFd};
        use std::os::unix::fs::MetadataExt;
        let mnt = std::fs::File::open(format!("/proc/{}/ns/mnt", self.pid)).map_err(|e| {
            Error::not_found(format!("process {}: its mount namespace: {e}", self.pid))
        })?;
        const NS_GET_USERNS: libc::c_ulong = 0xb701;
        // SAFETY: NS_GET_USERNS takes no argument and returns a new fd or -1.
        let fd = unsafe { libc::ioctl(mnt.as_raw_fd(), NS_GET_USERNS) };
        if fd < 0 {
            return Err(Error::kernel(format!(
                "NS_GET_USERNS on the mount namespace of process {}: {}",
                self.pid,
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: fd is a fresh descriptor owned here.
        let owner = unsafe { std::fs::File::from_raw_fd(fd) };
        let own = std::fs::metadata("/proc/self/ns/user")
            .map_err(|e| Error::internal(format!("reading the daemon's user namespace: {e}")))?;
        let theirs = owner
            .metadata()
            .map_err(|e| Error::internal(format!("fstat of a user namespace: {e}")))?;
        Ok(own.ino() == theirs.ino() && own.dev() == theirs.dev())
    }
}

/// Checks metadata against the limits above.
pub(super) fn check_metadata(m: &BTreeMap<String, String>, what: &str) -> Result<()> {
    if m.len() > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(format!(
            "{what} has {} metadata entries; at most {MAX_METADATA_ENTRIES} are allowed",
            m.len()
        )));
    }
    let mut total = 0;
    for (k, v) in m {
        if k.is_empty() || k.len() > MAX_METADATA_KEY {
            return Err(Error::invalid(format!(
                "{what}: metadata keys must be 1 to {MAX_METADATA_KEY} bytes (one is {})",
                k.len()
            )));
        }
        if v.len() > MAX_METADATA_VALUE {
            return Err(Error::invalid(format!(
                "{what}: metadata value of '{}' is {} bytes; at most {MAX_METADATA_VALUE}",
                truncate(k, 64),
                v.len()
            )));
        }
        total += k.len() + v.len();
    }
    if total > MAX_METADATA_TOTAL {
        return Err(Error::invalid(format!(
            "{what}: metadata is {total} bytes in all; at most {MAX_METADATA_TOTAL}"
        )));
    }
    Ok(())
}

pub(super) fn reserved_keys(m: &BTreeMap<String, String>) -> Vec<&str> {
    m.keys()
        .map(String::as_str)
        .filter(|k| bpfman_types::metadata::is_reserved(k))
        .collect()
}

pub(super) fn check_name(s: &str, what: &str) -> Result<()> {
    if s.len() > MAX_NAME {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long; at most {MAX_NAME}",
            s.len()
        )));
    }
    if s.chars().any(|c| c.is_control()) {
        return Err(Error::invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

/// A tracepoint is CATEGORY/NAME, each of letters, digits, '_' and '-'.
pub(super) fn check_tracepoint(t: &str) -> Result<()> {
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= MAX_NAME
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    match t.split_once('/') {
        Some((a, b)) if ok(a) && ok(b) => Ok(()),
        _ => Err(Error::invalid(format!(
            "tracepoint '{}' must be CATEGORY/NAME of letters, digits, '_' and '-', e.g. \
             syscalls/sys_enter_openat",
            truncate(t, 128)
        ))),
    }
}

pub(super) fn check_elf(bytes: &[u8], path: &str) -> Result<()> {
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(Error::invalid(format!(
            "{path} is not an ELF object file; build eBPF programs with \
             `clang -target bpf -c` and give the .o"
        )));
    }
    Ok(())
}

/// A rule with `require_signature` admits only images a trusted key verified.
pub(super) fn require_signed(d: &Decision, rec: &ImageRecord) -> Result<()> {
    if d.require_signature && rec.signer.is_none() {
        return Err(Error::denied(format!(
            "policy rule '{}' requires signed images, and {} is not verified by a trusted \
             key ({}); sign it and configure its key in [[images.signatures.trusted_keys]]",
            d.rule.as_deref().unwrap_or("?"),
            rec.reference,
            rec.signature
        )));
    }
    Ok(())
}

pub(super) fn validate_hook(kind: &str, h: &NetHook, proceed: Option<ProceedOn>) -> Result<()> {
    if h.iface.is_empty() {
        return Err(Error::invalid(format!(
            "{kind} attach needs an interface (--iface)"
        )));
    }
    if !(1..=1000).contains(&h.priority) {
        return Err(Error::invalid(format!(
            "priority {} is out of range: use 1 (runs first) to 1000",
            h.priority
        )));
    }
    // A hook without a dispatcher's chain (tcx) takes no proceed-on codes at all.
    let unknown = match proceed {
        Some(p) => p.unknown(&h.proceed_on),
        None => h.proceed_on.first().copied(),
    };
    if let Some(code) = unknown {
        return Err(Error::invalid(format!(
            "proceed-on value {code} is not a {kind} return code; use {}",
            proceed.map(ProceedOn::names).unwrap_or_default().join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(priority: i32, proceed_on: Vec<i32>) -> NetHook {
        NetHook {
            iface: "veth0".into(),
            priority,
            proceed_on,
            netns: None,
            direction: None,
        }
    }

    #[test]
    fn hooks_are_validated_with_their_own_codes() {
        assert!(validate_hook("xdp", &hook(50, vec![2, 31]), Some(ProceedOn::Xdp)).is_ok());
        // 7 (TC_ACT_REDIRECT) is a TC code, not an XDP one.
        let e = validate_hook("xdp", &hook(50, vec![7]), Some(ProceedOn::Xdp)).expect_err("xdp 7");
        assert!(
            e.message().contains("not a xdp return code") && e.message().contains("pass"),
            "{e}"
        );
        assert!(validate_hook("tc", &hook(50, vec![7, -1]), Some(ProceedOn::Tc)).is_ok());
        for p in [0, 1001, -5] {
            let e =
                validate_hook("tc", &hook(p, vec![]), Some(ProceedOn::Tc)).expect_err("priority");
            assert!(e.message().contains("out of range"), "{e}");
        }
        let mut h = hook(50, vec![]);
        h.iface.clear();
        assert!(validate_hook("xdp", &h, Some(ProceedOn::Xdp)).is_err());
    }

    #[test]
    fn metadata_names_and_tracepoints_have_limits() {
        let big = "v".repeat(MAX_METADATA_VALUE + 1);
        let m = BTreeMap::from([("k".to_string(), big)]);
        assert!(check_metadata(&m, "link").is_err());
        let many: BTreeMap<String, String> = (0..=MAX_METADATA_ENTRIES)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(check_metadata(&many, "link").is_err());
        let m = BTreeMap::from([
            ("bpfman.io/uuid".to_string(), "x".to_string()),
            ("app".to_string(), "y".to_string()),
        ]);
        assert_eq!(reserved_keys(&m), vec!["bpfman.io/uuid"]);
        assert!(check_name("ok_name", "program name").is_ok());
        assert!(check_name("bad\u{7}", "program name").is_err());
        assert!(check_name(&"n".repeat(MAX_NAME + 1), "program name").is_err());
        assert!(check_tracepoint("syscalls/sys_enter_getpid").is_ok());
        for bad in ["syscalls", "a/b/c", "../x", "a/.."] {
            assert!(check_tracepoint(bad).is_err(), "{bad}");
        }
        assert!(check_elf(b"\x7fELF....", "f").is_ok());
        assert!(check_elf(b"#!/bin/sh", "f").is_err());
    }
}
