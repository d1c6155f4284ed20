// Proves that Node's pg can connect with a connection URL.
// Usage: node check_connection.js CONNECTION_URL
// Prints {"database": ..., "user": ...} on stdout.
"use strict";
const { Client } = require("pg");

async function main() {
  const connectionString = process.argv[2];
  const client = new Client({ connectionString });
  await client.connect();
  try {
    const { rows } = await client.query("select current_database() as database, current_user as user");
    console.log(JSON.stringify(rows[0]));
  } finally {
    await client.end();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
