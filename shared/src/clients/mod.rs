//! Adapters to outside services: AWS SDK configuration, the reply queue, Gemini.

#[cfg(any(feature = "sqs", feature = "dynamodb", feature = "secrets"))]
pub mod aws;
#[cfg(feature = "gemini")]
pub mod gemini;
pub mod queue;
