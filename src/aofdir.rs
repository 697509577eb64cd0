//! Redis 7 / Valkey multi-part AOF folders.

use crate::chain::{Generation, RecoveryPoint};
use crate::error::{Error, Exit, Result};
use crate::recover::Target;
use crate::s3::Store;

pub fn recover_dir(
    _store: &Store,
    _root: &str,
    _g: &Generation,
    _point: &RecoveryPoint,
    _target: &Target,
) -> Result<()> {
    Err(Error::new(
        Exit::Software,
        "aofdir recovery is not built yet",
    ))
}
