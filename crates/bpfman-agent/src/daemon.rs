//! Owns the agent's connection to its node's daemon: one client, through the client library
//! only, connected lazily and dropped after a transport failure so the next call reconnects;
//! and the watch that notices the daemon restarting or programs and links disappearing behind
//! the agent's back, through the socket (a cheap local `SystemInfo` each interval, no
//! Kubernetes request), so the agent re-converges without any Kubernetes event.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use bpfman_client::Client;
use tokio::sync::mpsc;

/// Program ids and link ids.
type Ids = (BTreeSet<u32>, BTreeSet<u32>);

/// The daemon as the agent uses it.
pub struct Daemon {
    socket: PathBuf,
    client: tokio::sync::Mutex<Option<Client>>,
    /// What each application (by key) last converged to: its program and link ids. The watch
    /// compares these with the daemon's.
    expected: Mutex<HashMap<String, Ids>>,
}

impl Daemon {
    pub fn new(socket: PathBuf) -> Self {
        Self {
            socket,
            client: tokio::sync::Mutex::new(None),
            expected: Mutex::new(HashMap::new()),
        }
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.socket
    }

    /// A client (a clone sharing one channel), connecting if there is none.
    pub async fn client(&self) -> Result<Client, bpfman_client::Error> {
        let mut g = self.client.lock().await;
        if let Some(c) = g.as_ref() {
            return Ok(c.clone());
        }
        let c = Client::connect(&self.socket).await?;
        *g = Some(c.clone());
        Ok(c)
    }

    /// Forgets the connection after a transport failure (the daemon restarted).
    pub async fn reset(&self) {
        *self.client.lock().await = None;
    }

    /// Notes what `key` converged to.
    pub fn expect(&self, key: &str, programs: BTreeSet<u32>, links: BTreeSet<u32>) {
        let mut m = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        if programs.is_empty() && links.is_empty() {
            m.remove(key);
        } else {
            m.insert(key.to_string(), (programs, links));
        }
    }

    /// Keys whose recorded ids are not all in `programs` / `links`.
    fn drifted(&self, programs: &BTreeSet<u32>, links: &BTreeSet<u32>) -> Vec<String> {
        let m = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        m.iter()
            .filter(|(_, (p, l))| !p.is_subset(programs) || !l.is_subset(links))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn all_keys(&self) -> Vec<String> {
        let m = self.expected.lock().unwrap_or_else(|p| p.into_inner());
        m.keys().cloned().collect()
    }
}

/// What the watch asks the controllers to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resync {
    /// The daemon (re)started: every application.
    All,
    /// These applications lost a program or link.
    Keys(Vec<String>),
}

/// Watches the daemon every `interval`: a new daemon pid means a restart (every application
/// is reconciled); a change in the daemon's program or link counts is checked against what
/// each application converged to, and the applications missing something are reconciled.
pub async fn watch(daemon: std::sync::Arc<Daemon>, interval: Duration, tx: mpsc::Sender<Resync>) {
    let mut last: Option<(u32, u64, u64)> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut c = match daemon.client().await {
            Ok(c) => c,
            Err(_) => {
                // Down: noticed; the first answer from a new daemon triggers the resync.
                last = last.map(|(_, p, l)| (0, p, l));
                continue;
            }
        };
        let info = match c.system_info().await {
            Ok(i) => i,
            Err(e) => {
                if e.is_transport() {
                    daemon.reset().await;
                }
                last = last.map(|(_, p, l)| (0, p, l));
                continue;
            }
        };
        let now = (info.daemon_pid, info.programs, info.links);
        let msg = match last {
            Some((pid, _, _)) if pid != now.0 => {
                tracing::info!(
                    pid = now.0,
                    "the daemon restarted: reconciling every application"
                );
                // A restarted daemon's first requests may race its own start-up repair.
                daemon.reset().await;
                Some(Resync::All)
            }
            Some((_, p, l)) if (p, l) != (now.1, now.2) => match ids(&mut c).await {
                Some((progs, links)) => {
                    let keys = daemon.drifted(&progs, &links);
                    (!keys.is_empty()).then_some(Resync::Keys(keys))
                }
                None => Some(Resync::Keys(daemon.all_keys())),
            },
            _ => None,
        };
        last = Some(now);
        if let Some(m) = msg {
            if let Resync::Keys(k) = &m {
                tracing::info!(applications = ?k, "programs or links went missing behind the agent's back");
            }
            if tx.send(m).await.is_err() {
                return;
            }
        }
    }
}

async fn ids(c: &mut Client) -> Option<(BTreeSet<u32>, BTreeSet<u32>)> {
    let progs = c.program_records().await.ok()?.into_keys().collect();
    let links = c
        .list_links(None)
        .await
        .ok()?
        .into_iter()
        .map(|l| l.link_id)
        .collect();
    Some((progs, links))
}
