// A graphile-worker task that always fails, with the message its payload names, so the Python
// side can check what a Node failure leaves in the jobs table.
module.exports = async (payload) => {
  throw new Error(payload.message);
};
