//! The shared registry: models, vmodels and instances, each a KV prefix under
//! `<root>/<prefix>/<service>/` (`modelmesh_kv::layout`), kept locally by a watch.

pub mod records;
pub mod table;

pub use modelmesh_kv::layout::Layout;
