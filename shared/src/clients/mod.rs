//! Adapters to outside services: AWS SDK configuration, the reply queue, Gemini.

#[cfg(any(feature = "sqs", feature = "dynamodb"))]
pub mod aws;
#[cfg(feature = "gemini")]
pub mod gemini;
pub mod queue;
