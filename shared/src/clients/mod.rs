//! Adapters to outside services: AWS SDK configuration, the reply queue, Gemini, SES.

#[cfg(any(
    feature = "sqs",
    feature = "dynamodb",
    feature = "secrets",
    feature = "ses"
))]
pub mod aws;
#[cfg(feature = "gemini")]
pub mod gemini;
pub mod queue;
#[cfg(feature = "ses")]
pub mod ses;
