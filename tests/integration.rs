//! The integration tests as one test binary: the support code is compiled, and the daemon's library linked,
//! once instead of once per file (39 files). Each file is a module and keeps its own name in test paths
//! (`cargo test --test integration oci::`).
//!
//! Files that change process-wide state or load the whole machine keep binaries of their own, declared in
//! Cargo.toml: faults.rs (timing bounds, tmpfs mounts), load.rs (RLIMIT_NOFILE, 1000 clients), security.rs
//! (umask) and tier_scale.rs (nine daemons). tests/architecture.rs checks that every file under tests/ is one
//! or the other.

mod support;

mod admin;
mod api;
mod architecture;
mod bindings;
mod build_settings;
mod cli;
mod cluster;
mod config;
mod credential_provider;
mod errors;
mod file;
mod grpc_clients;
mod grpc_extras;
mod guard;
mod hostile;
mod http;
mod http_access;
mod kubernetes_manifests;
mod lifecycle;
mod logs;
mod metrics;
mod oci;
mod oci_auth;
mod oci_token;
mod oci_transport;
mod policy;
mod properties;
mod registry_clients;
mod registry_endpoint;
mod registry_endpoint_rules;
mod registry_listen;
mod restart;
mod signature;
mod signatures;
mod stream;
mod systemd_activation;
mod systemd_units;
mod tls;
mod warm;
