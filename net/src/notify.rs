//! The service manager's notifications (systemd's `sd_notify` protocol, through the
//! `sd-notify` crate): `READY=1` once a process serves, `WATCHDOG=1` while its runtime is
//! responsive, `STOPPING=1` when it starts shutting down, and `STATUS=` lines for
//! `systemctl status`. The shipped units (`packaging/systemd/`) are `Type=notify` with a
//! `WatchdogSec=`.
//!
//! Without `NOTIFY_SOCKET` in the environment (not started by systemd) every call here does
//! nothing; a failed send is logged at debug level and otherwise ignored, as a process that
//! serves should not stop over its supervisor's socket.

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        debug!("cannot notify the service manager: {e}");
    }
}

/// `READY=1`, with `status` as the status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A status line alone (`systemctl status` shows the last one).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// `STOPPING=1`: shutdown has started (systemd then waits up to `TimeoutStopSec=`).
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// How often the watchdog is pinged: half its timeout (`WATCHDOG_USEC`, set by systemd from
/// `WatchdogSec=` for this process only), as `sd_watchdog_enabled(3)` advises; `None` when
/// no watchdog is asked for.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().map(|timeout| (timeout / 2).max(Duration::from_millis(1)))
}

/// Pings the watchdog (`WATCHDOG=1`) from a task of the current tokio runtime, at
/// [`watchdog_interval`], until the guard is dropped. The pings come from the runtime
/// itself, so they stop when it stops running tasks (every worker stuck, a deadlock, a
/// blocking call on each thread), and systemd then restarts the process. `None` (and no
/// task) when no watchdog is asked for. Must be called within a tokio runtime.
pub fn watchdog() -> Option<Watchdog> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let every = watchdog_interval()?;
    let task = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        // A late tick (the runtime was busy) pings once, not in a burst that would hide it.
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Bounded by the guard: dropping it aborts the task.
        loop {
            ticks.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
    Some(Watchdog(task))
}

/// Keeps the watchdog pings going; dropping it stops them.
#[derive(Debug)]
pub struct Watchdog(tokio::task::JoinHandle<()>);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Says `READY=1` once `registered` turns true, or at once when `await_registration` is
/// false (a node under no tracker). A node under trackers is ready for steering only once a
/// tracker knows it, so its unit's dependents wait for that. Spawned on the current runtime;
/// nothing is spawned when no service manager listens.
pub fn ready_once_registered(
    await_registration: bool,
    mut registered: tokio::sync::watch::Receiver<bool>,
    status_line: String,
) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if !await_registration {
        ready(&status_line);
        return;
    }
    status(&format!("{status_line}; registering with the trackers"));
    tokio::spawn(async move {
        // Ends with the process (the sender lives in the member task) or once registered.
        if registered.wait_for(|r| *r).await.is_ok() {
            ready(&format!("{status_line}; registered"));
        }
    });
}
