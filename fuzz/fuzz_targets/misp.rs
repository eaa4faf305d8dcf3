#![no_main]

mod common;

use intelwall::config::FeedFormat;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| common::parse(FeedFormat::Misp, bytes));
