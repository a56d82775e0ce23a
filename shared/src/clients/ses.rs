//! Code e-mails through Amazon SES (API v2 `SendEmail`, simple content, UTF-8).

use aws_sdk_sesv2::Client;
use aws_sdk_sesv2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sesv2::types::{Body, Content, Destination, EmailContent, Message};
use tokio::sync::OnceCell;

use crate::auth::delivery::{CodeEmail, CodeMailer, DeliveryError};
use crate::auth::email::Email;

/// The e-mail sender of `Adapters` (state.rs): SES from `OTP_EMAIL_FROM`.
pub fn mailer(config: &crate::config::Config) -> anyhow::Result<std::sync::Arc<dyn CodeMailer>> {
    let from = config
        .otp_email_from
        .clone()
        .ok_or_else(|| anyhow::anyhow!("OTP_EMAIL_FROM is required when OTP_DELIVERY=ses"))?;
    Ok(std::sync::Arc::new(SesMailer::from_env(
        from,
        config.ses_configuration_set.clone(),
    )))
}

pub struct SesMailer {
    client: OnceCell<Client>,
    from: String,
    configuration_set: Option<String>,
}

impl SesMailer {
    /// The client is built on first send (credentials and region from the environment).
    pub fn from_env(from: String, configuration_set: Option<String>) -> Self {
        Self {
            client: OnceCell::new(),
            from,
            configuration_set,
        }
    }

    pub fn with_client(client: Client, from: String, configuration_set: Option<String>) -> Self {
        Self {
            client: OnceCell::new_with(Some(client)),
            from,
            configuration_set,
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async { Client::new(crate::clients::aws::sdk_config().await) })
            .await
    }
}

fn utf8(data: &str) -> Result<Content, DeliveryError> {
    Content::builder()
        .data(data)
        .charset("UTF-8")
        .build()
        .map_err(|e| DeliveryError(format!("building the message: {e}")))
}

/// A reason for the log without the addresses SES error messages often quote.
fn reason<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> String {
    match err {
        SdkError::ServiceError(e) => e.err().code().unwrap_or("service error").to_string(),
        SdkError::TimeoutError(_) => "timeout".into(),
        SdkError::DispatchFailure(_) => "unreachable".into(),
        SdkError::ResponseError(_) => "unreadable response".into(),
        _ => "request not sent".into(),
    }
}

#[async_trait::async_trait]
impl CodeMailer for SesMailer {
    async fn send(&self, to: &Email, message: &CodeEmail) -> Result<(), DeliveryError> {
        let content = EmailContent::builder()
            .simple(
                Message::builder()
                    .subject(utf8(&message.subject)?)
                    .body(
                        Body::builder()
                            .text(utf8(&message.text)?)
                            .html(utf8(&message.html)?)
                            .build(),
                    )
                    .build(),
            )
            .build();
        self.client()
            .await
            .send_email()
            .from_email_address(&self.from)
            .destination(Destination::builder().to_addresses(to.as_str()).build())
            .content(content)
            .set_configuration_set_name(self.configuration_set.clone())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| DeliveryError(reason(&e)))
    }
}
