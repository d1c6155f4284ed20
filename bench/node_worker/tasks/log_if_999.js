// The drain benchmark's task for Node graphile-worker (0.1.0 and 0.18.0); twin of
// bench/tasks/log_if_999.py. 0.18 replaced helpers.debug (which now logs an error) with
// helpers.logger, which 0.1.0 does not have.
module.exports = async (payload, helpers) => {
  if (payload.id === 999) {
    if (helpers.logger) {
      helpers.logger.debug("found job 999");
    } else {
      helpers.debug("found job 999");
    }
  }
};
