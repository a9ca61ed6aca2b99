//! What the running kernel can do, probed once at daemon start-up by trying it.

use std::path::Path;
use std::sync::OnceLock;

use aya::programs::tc::TcAttachType;
use aya::programs::{Extension, FEntry, Lsm, SchedClassifier, Xdp};
use aya::{Btf, EbpfLoader};

use crate::model::{Feature, KernelFeature};

static PROBE_OBJ: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/probe.bpf.o"));

/// Kernel functions that fentry can target on any kernel with BPF (test stubs first).
const FENTRY_TARGETS: &[&str] = &["bpf_fentry_test1", "__x64_sys_getpid", "do_sys_openat2"];

/// The probed features.
#[derive(Debug, Clone)]
pub struct Features {
    pub kernel_release: String,
    pub list: Vec<Feature>,
}

impl Features {
    pub fn has(&self, feature: KernelFeature) -> bool {
        self.list
            .iter()
            .any(|f| f.name == feature.as_str() && f.supported)
    }
    pub fn detail(&self, feature: KernelFeature) -> String {
        self.list
            .iter()
            .find(|f| f.name == feature.as_str())
            .map(|f| f.detail.clone())
            .unwrap_or_default()
    }
}

static TCX: OnceLock<bool> = OnceLock::new();
static KPROBES: OnceLock<bool> = OnceLock::new();

/// Whether TCX (bpf_mprog on tc hooks, Linux 6.6) is there: a query of lo's hook works.
pub fn tcx_supported() -> bool {
    *TCX.get_or_init(|| SchedClassifier::query_tcx("lo", TcAttachType::Ingress).is_ok())
}

/// Whether kprobes can be attached: the kprobe PMU exists (CONFIG_KPROBES).
pub fn kprobes_supported() -> bool {
    *KPROBES.get_or_init(|| Path::new("/sys/bus/event_source/devices/kprobe").exists())
}

fn feature(name: KernelFeature, r: Result<String, String>) -> Feature {
    let name = name.as_str();
    match r {
        Ok(detail) => Feature {
            name: name.into(),
            supported: true,
            detail,
        },
        Err(detail) => Feature {
            name: name.into(),
            supported: false,
            detail,
        },
    }
}

fn probe_freplace() -> Result<String, String> {
    let mut ebpf = EbpfLoader::new()
        .extension("probe_ext")
        .load(PROBE_OBJ)
        .map_err(|e| format!("loading the probe object: {}", super::chain(&e)))?;
    let target_fd = {
        let xdp: &mut Xdp = ebpf
            .program_mut("probe_xdp")
            .ok_or("probe_xdp missing")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        xdp.load()
            .map_err(|e| format!("loading an XDP target: {}", super::chain(&e)))?;
        xdp.fd()
            .and_then(|fd| fd.try_clone().map_err(Into::into))
            .map_err(|e| format!("{e}"))?
    };
    let ext: &mut Extension = ebpf
        .program_mut("probe_ext")
        .ok_or("probe_ext missing")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    ext.load(target_fd, "probe_target").map_err(|e| {
        format!(
            "loading a BPF_PROG_TYPE_EXT program failed: {}",
            super::chain(&e)
        )
    })?;
    ext.attach()
        .map_err(|e| format!("attaching freplace failed: {}", super::chain(&e)))?;
    Ok("freplace load and attach to a global function work".into())
}

fn probe_fentry(btf: Option<&Btf>) -> Result<String, String> {
    let btf = btf.ok_or("no kernel BTF at /sys/kernel/btf/vmlinux")?;
    let mut last = String::from("no candidate kernel function found in BTF");
    for target in FENTRY_TARGETS {
        let mut ebpf = EbpfLoader::new()
            .btf(Some(btf))
            .load(PROBE_OBJ)
            .map_err(|e| format!("loading the probe object: {}", super::chain(&e)))?;
        let p: &mut FEntry = ebpf
            .program_mut("probe_fentry")
            .ok_or("probe_fentry missing")?
            .try_into()
            .map_err(|e| format!("{e}"))?;
        match p.load(target, btf) {
            Ok(()) => return Ok(format!("fentry load against {target} works")),
            Err(e) => last = format!("fentry load against {target} failed: {}", super::chain(&e)),
        }
    }
    Err(last)
}

/// BPF LSM: a program loads against the `file_open` hook (never attached here), and `bpf`
/// is among the active LSMs where securityfs says (a loaded program on a kernel whose
/// LSM list lacks `bpf` would attach and never run).
fn probe_lsm(btf: Option<&Btf>) -> Result<String, String> {
    let btf = btf.ok_or("no kernel BTF at /sys/kernel/btf/vmlinux")?;
    let mut ebpf = EbpfLoader::new()
        .btf(Some(btf))
        .load(PROBE_OBJ)
        .map_err(|e| format!("loading the probe object: {}", super::chain(&e)))?;
    let p: &mut Lsm = ebpf
        .program_mut("probe_lsm")
        .ok_or("probe_lsm missing")?
        .try_into()
        .map_err(|e| format!("{e}"))?;
    p.load("file_open", btf).map_err(|e| {
        format!(
            "the kernel refused an LSM program on file_open: {} (BPF LSM needs \
             CONFIG_BPF_LSM and `bpf` in the boot's lsm= list)",
            super::chain(&e)
        )
    })?;
    match std::fs::read_to_string("/sys/kernel/security/lsm") {
        Ok(active) if active.split(',').any(|l| l.trim() == "bpf") => Ok(format!(
            "LSM load on file_open works; active LSMs: {}",
            active.trim()
        )),
        Ok(active) => Err(format!(
            "LSM programs load but `bpf` is not an active LSM ({}): they would never run; \
             boot with lsm=...,bpf",
            active.trim()
        )),
        Err(_) => {
            Ok("LSM load on file_open works (securityfs not mounted: active LSMs unknown)".into())
        }
    }
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false)
}

fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn version_at_least(release: &str, major: u32, minor: u32) -> bool {
    let mut it = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (a, b) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

/// Probes everything once. `bpffs` is the daemon's bpffs mount.
pub fn probe(bpffs: &Path) -> Features {
    let release = kernel_release();
    let btf = Btf::from_sys_fs().ok();
    let mut list = vec![
        feature(
            KernelFeature::Bpffs,
            if is_bpffs(bpffs) {
                Ok(format!("mounted at {}", bpffs.display()))
            } else {
                Err(format!("{} is not a bpffs mount", bpffs.display()))
            },
        ),
        feature(
            KernelFeature::Btf,
            btf.as_ref()
                .map(|_| "kernel BTF at /sys/kernel/btf/vmlinux".to_string())
                .ok_or_else(|| "no /sys/kernel/btf/vmlinux".to_string()),
        ),
        feature(KernelFeature::Freplace, probe_freplace()),
        feature(KernelFeature::Fentry, probe_fentry(btf.as_ref())),
        feature(KernelFeature::Lsm, probe_lsm(btf.as_ref())),
        feature(
            KernelFeature::Kprobe,
            if kprobes_supported() {
                Ok("kprobe PMU present".into())
            } else {
                Err("no kprobe PMU (/sys/bus/event_source/devices/kprobe): kernel built without CONFIG_KPROBES".into())
            },
        ),
        feature(
            KernelFeature::Uprobe,
            if Path::new("/sys/bus/event_source/devices/uprobe").exists() {
                Ok("uprobe PMU present".into())
            } else {
                Err("no uprobe PMU (/sys/bus/event_source/devices/uprobe)".into())
            },
        ),
        feature(
            KernelFeature::Tcx,
            if tcx_supported() {
                Ok("BPF_PROG_QUERY on a TCX hook works (Linux 6.6+)".into())
            } else {
                Err("TCX query failed: kernel older than 6.6".into())
            },
        ),
        feature(
            KernelFeature::XdpLink,
            if version_at_least(&release, 5, 9) {
                Ok("XDP bpf_link (Linux 5.9+)".into())
            } else {
                Err("XDP bpf_link needs Linux 5.9".into())
            },
        ),
    ];
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Features {
        kernel_release: release,
        list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare() {
        assert!(version_at_least("6.18.44-fc-v782", 5, 9));
        assert!(version_at_least("5.10.0", 5, 9));
        assert!(!version_at_least("5.4.0-generic", 5, 9));
    }
}
