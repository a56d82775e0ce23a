//! E-mailing one-time codes: what the message says (plain text and HTML, UTF-8), and the
//! port a mail service (SES) plugs into. No AWS types here.

use crate::auth::email::Email;
use crate::auth::otp::Purpose;

/// One code e-mail, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeEmail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Why a code e-mail did not go out: a short, PII-free reason for the log
/// (an SES error code such as `MessageRejected`, or `timeout`).
#[derive(Debug, Clone)]
pub struct DeliveryError(pub String);

/// Sends code e-mails. `Err` means the message was not accepted for delivery.
#[async_trait::async_trait]
pub trait CodeMailer: Send + Sync {
    async fn send(&self, to: &Email, message: &CodeEmail) -> Result<(), DeliveryError>;
}

pub fn subject(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Login => "Your chatroom sign-in code",
        Purpose::PasswordReset => "Your chatroom password code",
    }
}

/// The message for `code`, valid `ttl_secs`.
pub fn compose(purpose: Purpose, code: &str, ttl_secs: u64) -> CodeEmail {
    let minutes = ttl_secs.div_ceil(60);
    let what = match purpose {
        Purpose::Login => "to sign in to chatroom",
        Purpose::PasswordReset => "to set or reset your chatroom password",
    };
    let lasts = format!(
        "It works once, for {minutes} minute{}.",
        if minutes == 1 { "" } else { "s" }
    );
    let ignore =
        "If you did not ask for this, ignore this e-mail: nothing changes without the code.";
    let text = format!("Your code {what} is:\n\n    {code}\n\n{lasts}\n\n{ignore}\n");
    // Every interpolated value is ours (digits and fixed phrases): nothing to escape.
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif\"><p>Your code {what} is:</p>\
         <p style=\"font-size:28px;font-weight:bold;letter-spacing:4px\">{code}</p>\
         <p>{lasts}</p><p style=\"color:#666\">{ignore}</p></body></html>",
        title = subject(purpose),
    );
    CodeEmail {
        subject: subject(purpose).to_string(),
        text,
        html,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_bodies_say_code_lifetime_purpose_and_ignore() {
        for (purpose, what) in [
            (Purpose::Login, "sign in"),
            (Purpose::PasswordReset, "password"),
        ] {
            let m = compose(purpose, "042917", 300);
            assert_eq!(m.subject, subject(purpose));
            for body in [&m.text, &m.html] {
                assert!(body.contains("042917"), "{body}");
                assert!(body.contains("5 minutes"), "{body}");
                assert!(body.contains(what), "{body}");
                assert!(
                    body.contains("If you did not ask for this, ignore"),
                    "{body}"
                );
            }
            assert!(m.html.contains("charset=\"utf-8\""));
        }
        assert!(compose(Purpose::Login, "1", 60).text.contains("1 minute."));
    }
}
