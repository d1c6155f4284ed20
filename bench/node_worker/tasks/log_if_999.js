// The drain benchmark's task for Node graphile-worker 0.1.0; twin of bench/tasks/log_if_999.py.
module.exports = async (payload, helpers) => {
  if (payload.id === 999) {
    helpers.debug("found job 999");
  }
};
