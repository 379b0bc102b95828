//! Leader election on a coordination.k8s.io Lease, through the datastore's compare-and-swap
//! (client-go's algorithm): the holder renews `renewTime` every retry period; a candidate takes
//! the lease over only when the record has not changed for a whole lease duration *as it
//! observed it*, so clocks of different machines never need to agree. A leader that cannot
//! renew within the renew deadline stops its work before anyone else may start theirs.
//!
//! [`decide`] is the pure rule; [`Elector`] does the reads and writes.

use std::future::Future;
use std::time::Duration;

use gingham_api::datastore::{Datastore, Store};
use gingham_api::resources::core::Lease;
use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Who we are (the pod's name): what `holderIdentity` says while we lead.
    pub identity: String,
    pub duration: Duration,
    /// A leader that has not renewed for this long stops leading (shorter than `duration`).
    pub renew_deadline: Duration,
    pub retry: Duration,
}

impl LeaseConfig {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// What to do with the lease as just read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Create,
    /// We hold it: renew.
    Renew,
    /// Its holder let it expire (or released it): take it over.
    TakeOver,
    /// Someone else holds it.
    Wait {
        holder: String,
    },
}

/// The lease record as last seen, and when we saw it change.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    record: Option<(Option<String>, Option<MicroTime>)>,
    since: Option<Instant>,
}

/// The election rule, pure: `observed` remembers when the record last changed.
pub fn decide(lease: Option<&Lease>, me: &str, default_duration: Duration, observed: &mut Observed, now: Instant) -> Step {
    let Some(lease) = lease else { return Step::Create };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let record = (holder.clone(), spec.renew_time.clone());
    if observed.record.as_ref() != Some(&record) {
        observed.record = Some(record);
        observed.since = Some(now);
    }
    let duration = spec.lease_duration_seconds.map_or(default_duration, |s| Duration::from_secs(s.max(1) as u64));
    match holder {
        Some(h) if h == me => Step::Renew,
        None => Step::TakeOver,
        Some(_) if observed.since.is_some_and(|t| now.duration_since(t) >= duration) => Step::TakeOver,
        Some(holder) => Step::Wait { holder },
    }
}

pub struct Elector<D> {
    store: Store<D>,
    config: LeaseConfig,
    observed: Observed,
}

impl<D: Datastore> Elector<D> {
    pub fn new(store: Store<D>, config: LeaseConfig) -> Self {
        Elector { store, config, observed: Observed::default() }
    }

    /// One attempt to hold the lease: `Ok(true)` when we hold it afterwards.
    async fn try_hold(&mut self) -> anyhow::Result<bool> {
        let key = self.config.key();
        let current: Option<Lease> = self.store.get(&key).await?;
        let step = decide(current.as_ref(), &self.config.identity, self.config.duration, &mut self.observed, Instant::now());
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let mine = |transitions: Option<i32>, acquired: Option<MicroTime>| LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(self.config.duration.as_secs().max(1) as i32),
            acquire_time: acquired.or(Some(now.clone())),
            renew_time: Some(now.clone()),
            lease_transitions: transitions,
            // Coordinated leader election (alpha in Kubernetes 1.31+) is not used.
            ..Default::default()
        };
        let written = match (step, current) {
            (Step::Create, _) => {
                let mut lease = Lease::default();
                lease.metadata.name = Some(self.config.name.clone());
                lease.metadata.namespace = Some(self.config.namespace.clone());
                lease.spec = Some(mine(Some(0), None));
                self.store.create(&lease).await
            }
            (Step::Renew, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                lease.spec = Some(mine(old.lease_transitions, old.acquire_time));
                self.store.update(&lease).await
            }
            (Step::TakeOver, Some(mut lease)) => {
                let old = lease.spec.clone().unwrap_or_default();
                tracing::info!(previous = ?old.holder_identity, "taking over the lease");
                lease.spec = Some(mine(Some(old.lease_transitions.unwrap_or(0) + 1), None));
                self.store.update(&lease).await
            }
            (Step::Wait { .. }, _) | (_, None) => return Ok(false),
        };
        match written {
            Ok(_) => Ok(true),
            // Someone else wrote first: they won this round.
            Err(e) if e.is_conflict() => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up at once so a standby need not wait for it to expire.
    async fn release(&mut self) {
        let key = self.config.key();
        if let Ok(Some(mut lease)) = self.store.get::<Lease>(&key).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(self.config.identity.as_str()) {
                spec.holder_identity = None;
                if let Err(e) = self.store.update(&lease).await {
                    tracing::warn!(error = %e, "could not release the lease; it expires by itself");
                }
            }
        }
    }

    /// Runs `work` whenever we lead, until `shutdown` completes (then releases the lease). The
    /// work future is dropped the moment leadership is lost.
    pub async fn run<W, F>(mut self, mut work: W, shutdown: impl Future<Output = ()>)
    where
        W: FnMut() -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        tokio::pin!(shutdown);
        loop {
            // Follow until we hold it.
            loop {
                match self.try_hold().await {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "reading the lease failed"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(self.config.retry) => {}
                    _ = &mut shutdown => return,
                }
            }
            tracing::info!(identity = %self.config.identity, lease = %self.config.key(), "leading");
            let mut task = AbortOnDrop(tokio::spawn(work()));
            let mut renewed = Instant::now();
            let lost = loop {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.retry) => {}
                    _ = &mut shutdown => break false,
                }
                match self.try_hold().await {
                    Ok(true) => renewed = Instant::now(),
                    Ok(false) => break true,
                    Err(e) => tracing::warn!(error = %e, "renewing the lease failed"),
                }
                if renewed.elapsed() >= self.config.renew_deadline {
                    break true;
                }
            };
            task.0.abort();
            let _ = (&mut task.0).await;
            drop(task);
            if !lost {
                self.release().await;
                tracing::info!("stopped leading (shutdown); lease released");
                return;
            }
            tracing::warn!("lost the lease; work stopped");
            self.observed = Observed::default();
        }
    }
}

/// The work stops with whatever owns it, also when the elector itself is dropped mid-term.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs: i64) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(String::from),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::from_second(renewed_secs).unwrap())),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_lease_is_taken_over_only_after_it_stood_still_for_its_duration() {
        let d = Duration::from_secs(15);
        let t0 = Instant::now();
        let mut seen = Observed::default();
        assert_eq!(decide(None, "b", d, &mut seen, t0), Step::Create);
        assert_eq!(decide(Some(&lease(Some("a"), 100)), "b", d, &mut seen, t0), Step::Wait { holder: "a".into() });
        // a renews: the clock starts again, whatever the timestamps say.
        assert_eq!(decide(Some(&lease(Some("a"), 90)), "b", d, &mut seen, t0 + Duration::from_secs(14)), Step::Wait { holder: "a".into() });
        assert_eq!(
            decide(Some(&lease(Some("a"), 90)), "b", d, &mut seen, t0 + Duration::from_secs(28)),
            Step::Wait { holder: "a".into() },
            "14 s unchanged is not 15"
        );
        assert_eq!(decide(Some(&lease(Some("a"), 90)), "b", d, &mut seen, t0 + Duration::from_secs(29)), Step::TakeOver);
        assert_eq!(decide(Some(&lease(Some("b"), 90)), "b", d, &mut seen, t0), Step::Renew);
        assert_eq!(decide(Some(&lease(None, 90)), "b", d, &mut Observed::default(), t0), Step::TakeOver, "released");
    }
}
