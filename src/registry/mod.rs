//! The OCI Distribution pull-through endpoint (`--registry-listen`): the read side of the distribution spec,
//! answered by a `cache::registry::RegistryBackend`. This module only translates; [`route`] says which upstream
//! repository a request path names.

pub mod route;
