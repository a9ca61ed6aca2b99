//! Owns leader election: one `coordination.k8s.io/v1` Lease (upstream's id,
//! `8730d955.bpfman.io`) that the replica leading holds and renews; the others wait until it
//! expires or is released. Every change is a replace carrying the resourceVersion read, so two
//! replicas never both win a round (the API server refuses the second with 409). A leader that
//! cannot renew within the lease's duration stops leading (the process exits, as
//! controller-runtime's does), so two leaders never act at once for longer than the clock skew
//! between their renewals; a leader stopping releases the Lease for an immediate hand-over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

/// Upstream's leader-election id.
pub const LEASE_NAME: &str = "8730d955.bpfman.io";

/// How leadership is held.
#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: String,
    pub name: String,
    /// This replica (its pod name).
    pub identity: String,
    /// How long a Lease not renewed stays held.
    pub duration: Duration,
    /// How often the leader renews and the others retry.
    pub retry: Duration,
}

/// A Lease the caller holds.
pub struct Held {
    api: Api<Lease>,
    opts: Options,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// What this replica last saw of another holder's Lease: its resourceVersion and when it was
/// first seen so. A Lease expires when it has not changed for its duration *as this replica
/// measures it* (client-go's rule): a renewTime in the future (clock skew, a hand edit) or in
/// the past says nothing.
#[derive(Default)]
pub struct Observed(Option<(String, std::time::Instant)>);

impl Observed {
    fn expired(&mut self, lease: &Lease) -> bool {
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        let secs = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .unwrap_or(15)
            .max(1);
        let dur = Duration::from_secs(u64::try_from(secs).unwrap_or(15));
        match &self.0 {
            Some((seen, at)) if *seen == rv => at.elapsed() >= dur,
            _ => {
                self.0 = Some((rv, std::time::Instant::now()));
                false
            }
        }
    }
}

/// One attempt: `Ok(true)` when this replica holds the Lease afterwards.
async fn try_take(api: &Api<Lease>, o: &Options, seen: &mut Observed) -> Result<bool, kube::Error> {
    let secs = i32::try_from(o.duration.as_secs()).unwrap_or(15).max(1);
    match api.get_opt(&o.name).await? {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(o.name.clone()),
                    namespace: Some(o.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(o.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(mut lease) => {
            let spec = lease.spec.clone().unwrap_or_default();
            let mine = spec.holder_identity.as_deref() == Some(o.identity.as_str());
            let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
            if !mine && !free && !seen.expired(&lease) {
                return Ok(false);
            }
            let mut next = spec.clone();
            next.holder_identity = Some(o.identity.clone());
            next.lease_duration_seconds = Some(secs);
            next.renew_time = Some(now());
            if !mine {
                next.acquire_time = Some(now());
                next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            lease.spec = Some(next);
            match api.replace(&o.name, &PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: Client, opts: Options) -> Held {
    let api: Api<Lease> = Api::namespaced(client, &opts.namespace);
    let mut said = false;
    let mut seen = Observed::default();
    loop {
        match try_take(&api, &opts, &mut seen).await {
            Ok(true) => {
                tracing::info!(lease = opts.name, identity = opts.identity, "leading");
                return Held { api, opts };
            }
            Ok(false) if !said => {
                tracing::info!(lease = opts.name, "another replica leads: waiting");
                said = true;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(lease = opts.name, error = %e, "taking the Lease"),
        }
        tokio::time::sleep(opts.retry).await;
    }
}

impl Held {
    /// Renews until a renewal has failed for longer than the lease's duration (or another
    /// replica holds it), then returns: the caller must stop leading.
    pub async fn keep(&self) {
        let mut last_ok = tokio::time::Instant::now();
        let mut seen = Observed::default();
        loop {
            tokio::time::sleep(self.opts.retry).await;
            match try_take(&self.api, &self.opts, &mut seen).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = self.opts.name, "another replica took the Lease");
                    return;
                }
                Err(e) => tracing::warn!(lease = self.opts.name, error = %e, "renewing the Lease"),
            }
            // Stop before the Lease can expire unrenewed (a margin of one retry).
            if last_ok.elapsed() + self.opts.retry >= self.opts.duration {
                tracing::error!(lease = self.opts.name, "could not renew the Lease in time");
                return;
            }
        }
    }

    /// Lets go of the Lease at once (a clean stop), so another replica takes over without
    /// waiting for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.opts.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.opts.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        if let Err(e) = self
            .api
            .replace(&self.opts.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = self.opts.name, error = %e, "releasing the Lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::SignedDuration;

    #[test]
    fn a_lease_expires_when_unchanged_for_its_duration_whatever_its_renew_time() {
        let lease = |rv: &str, renewed_in: i64| Lease {
            metadata: ObjectMeta {
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("ghost".into()),
                // An hour in the future: says nothing.
                renew_time: Some(MicroTime(
                    Timestamp::now() + SignedDuration::from_secs(renewed_in),
                )),
                lease_duration_seconds: Some(1),
                ..Default::default()
            }),
        };
        let mut seen = Observed::default();
        assert!(!seen.expired(&lease("1", 3600)), "first sight");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(
            seen.expired(&lease("1", 3600)),
            "unchanged for its duration"
        );
        assert!(!seen.expired(&lease("2", 3600)), "renewed: seen anew");
    }
}
