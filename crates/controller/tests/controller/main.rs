//! Integration tests of the controller's pure parts: the state machine, the
//! audit records and the custom resource definitions.

mod audit;
mod crds;
mod decide;
mod helpers;
mod leader;
mod props;
mod reconcile;
