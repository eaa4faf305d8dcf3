//! Notifications to the service manager (systemd's `sd_notify` protocol).
//!
//! Each function sends one datagram to the socket named by `NOTIFY_SOCKET`
//! and does nothing when that variable is unset, as when the agent runs from
//! a shell. A failed send is logged and otherwise ignored, because the
//! agent's protection does not depend on the service manager hearing about
//! it.

use sd_notify::NotifyState;

/// Tells the service manager that start-up is finished. Call it once the
/// program is attached to every interface, so that `systemctl start` returns
/// only when protection is in place.
pub fn notify_ready() {
    send(&[NotifyState::Ready], "READY=1");
}

/// Tells the service manager that the agent is shutting down.
pub fn notify_stopping() {
    send(&[NotifyState::Stopping], "STOPPING=1");
}

/// Sets the one-line status that `systemctl status` shows.
pub fn notify_status(status: &str) {
    // The protocol is line-based, so a newline would end the status early and
    // start a bogus assignment.
    let line = status.replace('\n', " ");
    send(&[NotifyState::Status(&line)], "STATUS");
}

fn send(states: &[NotifyState<'_>], name: &str) {
    if let Err(error) = sd_notify::notify(states) {
        tracing::warn!(%error, "cannot send {name} to the service manager");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // NOTE: the calls below rely on NOTIFY_SOCKET being unset in the test
    // environment; under a systemd unit with Type=notify they would send
    // real notifications.
    #[test]
    fn notify_without_socket_is_noop() {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            eprintln!("skipped: NOTIFY_SOCKET is set, so the calls would reach a service manager");
            return;
        }
        notify_status("loading feeds\nsecond line");
        notify_ready();
        notify_stopping();
    }
}
