//! The modelmesh Kubernetes controller: custom resources and their reconcilers.

pub mod crd;
