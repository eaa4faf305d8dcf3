//! intelwall: threat-intelligence driven packet filtering with XDP.
//!
//! The pipeline: [`feed`] parsers fill the [`intel`] store; [`rule`]
//! expressions are parsed and type-checked; [`compile`] turns rules and intel
//! into a map image; [`dataplane`] loads the XDP program and writes the image
//! into its maps. [`pipeline`] strings these together for the [`cli`].

pub mod cli;
pub mod compile;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod events;
pub mod explain;
pub mod feed;
pub mod intel;
pub mod metrics;
pub mod pin;
pub mod pipeline;
pub mod report;
pub mod rule;
pub mod safety;
pub mod service;
pub mod source;
pub mod stats;
pub mod status;
pub mod top;
