//! A fake kernel for the manager's unit tests: programs and links live in memory, pins
//! are plain files under the test's directory (laid out by the real `Bpffs`), ids come
//! from a counter. Network hooks and dispatchers are not simulated (they answer
//! "unsupported"); their decisions are tested as pure planners in `plan`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::bpffs::Bpffs;
use crate::error::{Error, Result};
use crate::kernel::ops::{Bytecode, Ops};
use crate::kernel::{Attached, KernelProgram, LoadPlan, Loaded, LoadedProgram, TcxAnchor, ids};
use crate::model::{AttachSpec, HookKind, NetHook, ProgramKind, TcFilter};

#[derive(Default)]
struct State {
    /// Program pin -> program.
    programs: HashMap<PathBuf, KernelProgram>,
    /// Link pin -> (kernel link id, program id).
    links: HashMap<PathBuf, (u32, u32)>,
}

pub(crate) struct FakeKernel {
    layout: Bpffs,
    next_id: AtomicU32,
    state: Mutex<State>,
}

fn unsupported(what: &str) -> Error {
    Error::unsupported(format!("the fake kernel has no {what}"))
}

fn touch(p: &Path) -> Result<()> {
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)
            .map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
    }
    std::fs::write(p, b"").map_err(|e| Error::io(format!("pinning {}", p.display()), e))
}

impl FakeKernel {
    pub(crate) fn new(layout: &Bpffs) -> Self {
        Self {
            layout: layout.clone(),
            next_id: AtomicU32::new(100),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn id(&self) -> u32 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Programs and links the fake kernel holds (for leak checks).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let s = self.state();
        (s.programs.len(), s.links.len())
    }
}

impl Ops for FakeKernel {
    fn load(&self, _bytes: Bytecode, plan: LoadPlan) -> Result<Loaded> {
        let mut programs = Vec::new();
        for spec in &plan.programs {
            let id = self.id();
            let pin = self.layout.program(id);
            touch(&pin)?;
            let k = KernelProgram {
                id,
                name: spec.name.clone(),
                program_type: spec.kind.kernel_type() as u32,
                tag: format!("{id:016x}"),
                ..Default::default()
            };
            self.state().programs.insert(pin.clone(), k.clone());
            programs.push(LoadedProgram {
                id,
                kind: spec.kind,
                tag: k.tag,
                pin_path: pin,
            });
        }
        let (map_dir, maps) = match plan.shared_maps {
            Some((dir, _)) => (dir, Vec::new()),
            None => {
                let dir = self
                    .layout
                    .maps(programs.first().map(|p| p.id).unwrap_or(0));
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                (dir, Vec::new())
            }
        };
        Ok(Loaded {
            programs,
            map_dir,
            maps,
        })
    }
    fn pinned_info(&self, pin: &Path) -> Result<KernelProgram> {
        self.state()
            .programs
            .get(pin)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no program pinned at {}", pin.display())))
    }
    fn link_program_id(&self, pin: &Path) -> Option<u32> {
        self.state().links.get(pin).map(|(_, p)| *p)
    }
    fn program_stats(
        &self,
        pin: &Path,
        __map_memlock: &mut crate::kernel::stats::StatsCache,
    ) -> Result<crate::kernel::stats::ProgramStats> {
        let p = self.pinned_info(pin)?;
        Ok(crate::kernel::stats::ProgramStats {
            id: p.id,
            verified_insns: p.verified_insns,
            jited_bytes: p.bytes_jited,
            memlock_bytes: p.bytes_memlock as u64,
            ..Default::default()
        })
    }
    fn all_programs(&self) -> Vec<KernelProgram> {
        self.state().programs.values().cloned().collect()
    }
    fn unpin_program(&self, pin: &Path) -> Result<()> {
        self.state().programs.remove(pin);
        self.layout.remove(pin)
    }
    fn wait_gone(&self, obj: ids::Object, id: u32) -> bool {
        !self.exists(obj, id)
    }
    fn exists(&self, obj: ids::Object, id: u32) -> bool {
        let s = self.state();
        match obj {
            ids::Object::Program => s.programs.values().any(|p| p.id == id),
            ids::Object::Link => s.links.values().any(|(l, _)| *l == id),
        }
    }
    fn remove_maps(&self, dir: &Path) {
        let _ = self.layout.remove(dir);
    }
    fn attach(
        &self,
        _kind: ProgramKind,
        prog_pin: &Path,
        spec: &AttachSpec,
        link_pin: &Path,
        _tcx_order: Option<TcxAnchor>,
        _xdp_mode: Option<&str>,
    ) -> Result<Attached> {
        if spec.net_hook().is_some() {
            return Err(unsupported("network interfaces"));
        }
        let prog = self.pinned_info(prog_pin)?.id;
        let id = self.id();
        touch(link_pin)?;
        self.state()
            .links
            .insert(link_pin.to_path_buf(), (id, prog));
        Ok(Attached { kernel_link_id: id })
    }
    fn detach(&self, link_pin: &Path) -> Result<Option<u32>> {
        let gone = self.state().links.remove(link_pin).map(|(l, _)| l);
        self.layout.remove(link_pin)?;
        Ok(gone)
    }
    fn check_interface(&self, _hook: &NetHook) -> Result<u32> {
        Err(Error::not_found(
            "the fake kernel has no network interfaces",
        ))
    }
    fn link_id(&self, pin: &Path) -> Option<u32> {
        self.state().links.get(pin).map(|(l, _)| *l)
    }
    fn load_dispatcher(&self, _: HookKind, _: Vec<u8>, _: &Path, _: bool) -> Result<u32> {
        Err(unsupported("dispatchers"))
    }
    fn install_xdp(&self, _: &NetHook, _: &Path, _: &Path, _: Option<&str>) -> Result<Attached> {
        Err(unsupported("XDP"))
    }
    fn install_tc(&self, _: &NetHook, _: &Path, _: Option<TcFilter>) -> Result<(TcFilter, bool)> {
        Err(unsupported("TC"))
    }
    fn install_tc_link(&self, _: &NetHook, _: &Path, _: &Path) -> Result<()> {
        Err(unsupported("TCX"))
    }
    fn remove_tc(&self, _: &NetHook, _: TcFilter) -> Result<()> {
        Err(unsupported("TC"))
    }
    fn ext_target(&self, _: HookKind) -> Result<PathBuf> {
        Err(unsupported("freplace"))
    }
    fn load_extension(
        &self,
        _: Vec<u8>,
        _: LoadPlan,
        _: HookKind,
        _: &Path,
        _: &str,
        _: &Path,
    ) -> Result<u32> {
        Err(unsupported("freplace"))
    }
    fn attach_extension(
        &self,
        _: &Path,
        _: HookKind,
        _: &Path,
        _: &str,
        _: &Path,
    ) -> Result<Attached> {
        Err(unsupported("freplace"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::manager::{Manager, Paths};
    use crate::model::{Bytecode as Source, Caller, LoadRequest, ProgramSpec};

    /// A real eBPF object (the feature probe the build compiles), so the manager's own
    /// ELF checks see what they would in production; the fake kernel ignores it.
    static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe.bpf.o"));

    fn root() -> Caller {
        Caller {
            uid: 0,
            gid: 0,
            pid: std::process::id() as i32,
        }
    }

    /// A manager over the fake kernel in a fresh directory, with a real object to load.
    /// The manager opens bytecode files as the caller (here root) by switching its
    /// file-system credentials, which needs root: without it the test says so and skips.
    fn fixture(
        test: &str,
    ) -> Option<(
        tempfile::TempDir,
        PathBuf,
        Manager,
        std::sync::Arc<FakeKernel>,
    )> {
        if !nix::unistd::getuid().is_root() {
            eprintln!("SKIPPED {test}: needs root to open files as the caller");
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let obj = dir.path().join("prog.o");
        std::fs::write(&obj, OBJECT).expect("object");
        let (m, fake) = manager(dir.path());
        Some((dir, obj, m, fake))
    }

    fn request(
        obj: &Path,
        name: impl Into<String>,
        kind: ProgramKind,
        attach_fn: Option<String>,
    ) -> LoadRequest {
        LoadRequest {
            bytecode: Some(Source::File(obj.display().to_string())),
            programs: vec![ProgramSpec {
                name: name.into(),
                kind,
                attach_fn,
            }],
            ..Default::default()
        }
    }

    fn manager(dir: &Path) -> (Manager, std::sync::Arc<FakeKernel>) {
        let paths = Paths::new(&dir.join("run"), &dir.join("sock"));
        let mut config = Config::default();
        config.images.cache_dir = dir.join("images");
        let (m, fake) = Manager::open_fake(paths, config).expect("open over the fake kernel");
        (m, fake)
    }

    /// 10,000 load/attach/detach/unload cycles leave the manager's per-key tables, the
    /// store, bpffs and the fake kernel as they started.
    #[test]
    fn churn_over_the_fake_kernel_leaks_nothing() {
        let Some((dir, obj, m, fake)) = fixture("churn_over_the_fake_kernel") else {
            return;
        };
        let before = m.table_sizes();
        let cycles = 10_000;
        for i in 0..cycles {
            let req = request(&obj, format!("p{}", i % 7), ProgramKind::Tracepoint, None);
            let loaded = m.load(root(), req).expect("load");
            let id = loaded[0].id;
            let link = m
                .attach(
                    root(),
                    id,
                    AttachSpec::Tracepoint {
                        tracepoint: "syscalls/sys_enter_getpid".into(),
                    },
                )
                .expect("attach");
            m.detach(root(), link.id).expect("detach");
            m.unload(root(), id).expect("unload");
        }
        assert_eq!(
            m.table_sizes(),
            before,
            "per-key tables after {cycles} cycles"
        );
        assert_eq!(
            m.counts().expect("counts"),
            (0, 0),
            "store after {cycles} cycles"
        );
        assert_eq!(fake.counts(), (0, 0), "fake kernel after {cycles} cycles");
        let fs = crate::bpffs::Bpffs::new(&dir.path().join("run").join("fs")).expect("layout");
        for d in [fs.links_root(), fs.maps_root(), fs.ext_root()] {
            assert_eq!(
                fs.entries(&d).expect("list"),
                vec![],
                "{} after churn",
                d.display()
            );
        }
        let progs: Vec<_> = fs
            .entries(fs.root())
            .expect("list")
            .into_iter()
            .filter(|(n, _)| n.starts_with("prog_"))
            .collect();
        assert_eq!(progs, vec![], "program pins after churn");
    }

    #[test]
    fn refusals_leave_no_trace() {
        let Some((_dir, obj, m, fake)) = fixture("refusals_leave_no_trace") else {
            return;
        };
        let id = m
            .load(root(), request(&obj, "p", ProgramKind::Tracepoint, None))
            .expect("load")[0]
            .id;
        // A spec the program's kind does not take, and a malformed tracepoint.
        let e = m
            .attach(root(), id, AttachSpec::Fentry)
            .expect_err("wrong kind");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{e}");
        let e = m
            .attach(
                root(),
                id,
                AttachSpec::Tracepoint {
                    tracepoint: "no-slash".into(),
                },
            )
            .expect_err("malformed");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{e}");
        assert_eq!(fake.counts(), (1, 0));
        assert_eq!(m.counts().expect("counts"), (1, 0));
        m.unload(root(), id).expect("unload");
        assert_eq!(fake.counts(), (0, 0));
    }

    /// What the kernel lacks is refused naming the feature, before anything is loaded
    /// (the fake kernel reports no features at all).
    #[test]
    fn missing_features_are_refused_by_name() {
        let Some((_dir, obj, m, fake)) = fixture("missing_features_are_refused_by_name") else {
            return;
        };
        for (kind, feature) in [(ProgramKind::Fentry, "fentry"), (ProgramKind::Lsm, "lsm")] {
            let e = m
                .load(root(), request(&obj, "p", kind, Some("x".into())))
                .expect_err("no such feature");
            assert_eq!(e.kind(), crate::ErrorKind::Unsupported, "{e}");
            assert!(e.message().contains(&format!("'{feature}'")), "{e}");
        }
        let id = m
            .load(root(), request(&obj, "k", ProgramKind::Kprobe, None))
            .expect("kprobes load without the PMU; attaching needs it")[0]
            .id;
        let e = m
            .attach(
                root(),
                id,
                AttachSpec::Kprobe {
                    fn_name: "do_unlinkat".into(),
                    offset: 0,
                    container_pid: None,
                },
            )
            .expect_err("no kprobe PMU");
        assert!(e.message().contains("'kprobe'"), "{e}");
        assert_eq!(fake.counts(), (1, 0));
        m.unload(root(), id).expect("unload");
    }
}
