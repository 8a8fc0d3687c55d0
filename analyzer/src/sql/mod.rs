//! SQL text below the parser: the one lexer, the one statement splitter
//! and a token reader built on them.
//!
//! A leaf: it imports nothing else of the crate, and everything that needs
//! to know where a string, a comment or a statement ends asks here
//! (fingerprinting, correlation, request tags, the pipeline, OFFSET
//! reading), so no two parts of the analyzer can disagree about it.
//!
//! # Layout
//! - `lexer.rs`: tokens with byte spans; accepts any input.
//! - `split.rs`: statements with byte ranges, numbered as the proxy numbers
//!   a multi-statement query's replies.
//! - `reader.rs`: a cursor over one statement's first tokens.

pub(crate) mod lexer;
pub(crate) mod reader;
pub(crate) mod split;
