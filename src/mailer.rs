//! Sending OTP mails through lettre: to an outbox folder or an SMTP server.
//!
//! Runs on the mail worker thread only, because SMTP can block for seconds.

use crate::config::MailTarget;
use lettre::message::Mailbox;
use lettre::{FileTransport, Message, SmtpTransport, Transport};

/// A configured mail transport and sender.
pub struct Mailer {
    transport: Target,
    from: Mailbox,
}

enum Target {
    File(FileTransport),
    Smtp(Box<SmtpTransport>),
}

impl Mailer {
    /// Checks the configuration: the outbox folder exists (it is created) and is writable,
    /// the SMTP URL parses, the sender is an address.
    pub fn new(target: &MailTarget, from: &str) -> Result<Mailer, String> {
        let from: Mailbox = from.parse().map_err(|e| format!("--mail-from {from:?} is not an address: {e}"))?;
        let transport = match target {
            MailTarget::Outbox(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create the mail outbox {}: {e}", dir.display()))?;
                let probe = dir.join(".natter-write-test");
                std::fs::write(&probe, b"")
                    .map_err(|e| format!("the mail outbox {} is not writable: {e}", dir.display()))?;
                let _ = std::fs::remove_file(probe);
                Target::File(FileTransport::new(dir))
            }
            MailTarget::Smtp(url) => {
                let t = SmtpTransport::from_url(url).map_err(|e| format!("--smtp-url is not usable: {e}"))?;
                Target::Smtp(Box::new(t.timeout(Some(std::time::Duration::from_secs(20))).build()))
            }
        };
        Ok(Mailer { transport, from })
    }

    /// Sends the OTP mail, for a registration or (`reset`) a password reset; `Err` holds a
    /// reason fit for the log (never the OTP).
    pub fn send_otp(&self, to: &str, otp: &str, lifetime_min: u64, reset: bool) -> Result<(), String> {
        let to: Mailbox = to.parse().map_err(|e| format!("recipient is not a mailbox: {e}"))?;
        let (what, why) =
            if reset { ("password reset code", "reset your password") } else { ("verification code", "register") };
        let mail = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(format!("Your natter {what}"))
            .body(format!(
                "Your natter {what} is {otp}.\r\n\r\n\
                 It is valid for {lifetime_min} minutes. If you did not try to {why}, ignore this mail.\r\n"
            ))
            .map_err(|e| format!("could not build the mail: {e}"))?;
        match &self.transport {
            Target::File(t) => t.send(&mail).map(|_| ()).map_err(|e| format!("outbox: {e}")),
            Target::Smtp(t) => t.send(&mail).map(|_| ()).map_err(|e| format!("smtp: {e}")),
        }
    }
}
