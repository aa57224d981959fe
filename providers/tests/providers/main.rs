//! Integration tests of the `providers` crate: the conformance suite run against every
//! provider (fake, static, AWS through moto, GCP through gcplocal), plus each
//! provider's own behaviour (tags, tokens, error mapping, interruption).
//!
//! The AWS and GCP tests use the real SDK clients against emulators on 127.0.0.1,
//! started and stopped by `providers::emulator`; failures the emulators cannot produce come from
//! a fault proxy (`providers::fault_proxy`) between the SDK and the emulator.

mod aws;
mod conformance;
mod fake;
mod gcp;
mod static_pool;
