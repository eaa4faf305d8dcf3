//! intelwall: threat-intelligence driven packet filtering with XDP.
//!
//! The pipeline: [`feed`] parsers fill the [`intel`] store; [`rule`]
//! expressions are parsed and type-checked; [`compile`] turns rules and intel
//! into a map image; [`dataplane`] loads the XDP program and writes the image
//! into its maps.

pub mod config;
pub mod feed;
pub mod intel;
pub mod rule;
