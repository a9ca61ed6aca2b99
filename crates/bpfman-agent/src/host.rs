//! Owns what the agent reads off its own host: the network interfaces of the host network
//! namespace with their addresses (for the primary node interface and interface discovery),
//! and the watch that reconciles when interfaces come and go.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::mpsc;

/// Interfaces of the agent's network namespace (the host's: the agent runs with hostNetwork),
/// sorted by name, each with its addresses.
pub fn interfaces() -> Vec<(String, Vec<IpAddr>)> {
    let mut m: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    // Every interface, addressed or not.
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        for e in rd.flatten() {
            if let Some(n) = e.file_name().to_str() {
                m.entry(n.to_string()).or_default();
            }
        }
    }
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            let ip = a.address.as_ref().and_then(|s| {
                if let Some(v4) = s.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            });
            let e = m.entry(a.interface_name.clone()).or_default();
            if let Some(ip) = ip
                && !e.contains(&ip)
            {
                e.push(ip);
            }
        }
    }
    m.into_iter().collect()
}

/// Sends `()` whenever the set of interface names changes (checked every `interval`; reading
/// `/sys/class/net` costs microseconds and no request to anything).
pub async fn watch(interval: Duration, tx: mpsc::Sender<()>) {
    let names = || -> Vec<String> { interfaces().into_iter().map(|(n, _)| n).collect() };
    let mut last = names();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = names();
        if now != last {
            tracing::info!(interfaces = ?now, "host interfaces changed");
            last = now;
            if tx.send(()).await.is_err() {
                return;
            }
        }
    }
}
