//! The lost-agent sweep, run by the holder of the
//! [`super::LOST_AGENTS_LEASE`]: the hosts held by a server that died go
//! offline (once, whichever server sweeps), and the jobs of hosts whose
//! agent is connected to no server get the lost-agent grace
//! ([`crate::jobs::watch_for_lost_agent`]), as a restarted lone server
//! gives them.

use std::collections::HashMap;
use std::time::Instant;

use chrono::Utc;
use rm_core::HostId;

use super::{Lease, LOST_AGENTS_LEASE};
use crate::state::AppState;

/// Starts the sweep; it ends when the server stops.
pub(super) fn spawn(state: &AppState) -> tokio::task::JoinHandle<()> {
    let mut lease = Lease::spawn(state, LOST_AGENTS_LEASE);
    let state = state.clone();
    tokio::spawn(async move {
        // The first time, as a lone server does at start; later, the
        // lease comes from a holder that stopped answering.
        let mut why = "the server restarted";
        let mut watched = Watched::default();
        loop {
            tokio::select! {
                _ = lease.held() => {}
                _ = state.stopping() => return,
            }
            // A new holder does not know what the last one was watching:
            // every job whose agent is connected nowhere gets a grace.
            watch_unheld_hosts(&state, why, &mut watched).await;
            why = "the server watching it stopped answering";
            let mut rescan = Instant::now() + state.config().lost_agent_grace();
            while lease.is_held() {
                sweep(&state, &mut watched).await;
                // An agent that left a server stopping gracefully is
                // watched by nobody (a stopping server has lost no one);
                // if it never comes back, its jobs are found here.
                if Instant::now() >= rescan {
                    watch_unheld_hosts(
                        &state,
                        "its agent was connected to no server",
                        &mut watched,
                    )
                    .await;
                    rescan = Instant::now() + state.config().lost_agent_grace();
                }
                tokio::select! {
                    _ = tokio::time::sleep(state.cluster().renew()) => {}
                    _ = lease.lost() => {}
                    _ = state.stopping() => return,
                }
            }
        }
    })
}

/// The hosts this holder started a lost-agent grace for, and when: one
/// grace at a time per host.
#[derive(Default)]
struct Watched(HashMap<HostId, Instant>);

/// Marks the hosts of dead servers offline and starts their grace,
/// recorded in `watched` so the next look for unheld hosts does not start
/// a second one.
async fn sweep(state: &AppState, watched: &mut Watched) {
    let now = Utc::now();
    let hosts = match state.store().mark_orphaned_hosts_offline(now).await {
        Ok(hosts) => hosts,
        Err(e) => {
            tracing::warn!(error = %e, "could not sweep the hosts of dead servers");
            return;
        }
    };
    if hosts.is_empty() {
        return;
    }
    tracing::warn!(
        hosts = hosts.len(),
        "agents of a server that stopped answering are offline until they reconnect"
    );
    for host in hosts {
        crate::alerts::host_changed(state, host);
        watched.0.insert(host, Instant::now());
        crate::jobs::watch_for_lost_agent(
            state,
            host,
            now,
            String::from("the server holding its connection stopped answering"),
        );
    }
    state.fleet_changed();
}

/// Gives every host with dispatched or running jobs whose agent is
/// connected to no live server the lost-agent grace, unless `watched`
/// says one is running; `why` is what its jobs' error says happened.
async fn watch_unheld_hosts(state: &AppState, why: &str, watched: &mut Watched) {
    let hosts = match state.store().hosts_with_active_jobs().await {
        Ok(hosts) => hosts,
        Err(e) => {
            tracing::error!(error = %e, "could not list hosts with active jobs");
            return;
        }
    };
    let running = state.config().lost_agent_grace() + state.cluster().renew();
    watched.0.retain(|_, since| since.elapsed() < running);
    let now = Utc::now();
    for host in hosts {
        if watched.0.contains_key(&host) {
            continue;
        }
        match super::agent_connected(state, host).await {
            Ok(true) => {}
            Ok(false) => {
                watched.0.insert(host, Instant::now());
                crate::jobs::watch_for_lost_agent(state, host, now, why.to_owned());
            }
            Err(e) => tracing::warn!(%host, error = %e, "could not tell where a host's agent is"),
        }
    }
}
