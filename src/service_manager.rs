//! The service manager's notification protocol (systemd's `sd_notify(3)`, for
//! `Type=notify` and `Type=notify-reload` units): READY=1 once the sockets are bound and
//! the first sync with Consul is done (or `startup_wait` passed), RELOADING=1 and READY=1
//! around a SIGHUP reload, STOPPING=1 at shutdown. Nothing is sent when `$NOTIFY_SOCKET`
//! is not set; a failure to send is logged at debug and changes nothing else.

use sd_notify::NotifyState;
use tracing::debug;

/// Serving; `status` is shown by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Reloading the configuration that can be reloaded (the zones).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => {
            debug!(error = %e, "no monotonic clock for the service manager");
            send(&[NotifyState::Reloading]);
        }
    }
}

/// Shutting down.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        debug!(error = %e, "cannot notify the service manager");
    }
}
