// Creates a blob container on the local Azurite emulator (well-known development account).
// Usage: node azurite-container.js PORT NAME
const { BlobServiceClient } = require("@azure/storage-blob");
const [port, name] = process.argv.slice(2);
const conn =
  "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;" +
  "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;" +
  `BlobEndpoint=http://127.0.0.1:${port}/devstoreaccount1;`;
BlobServiceClient.fromConnectionString(conn)
  .getContainerClient(name)
  .createIfNotExists()
  .then(() => process.exit(0))
  .catch((e) => {
    console.error(`cannot create container ${name}: ${e.message}`);
    process.exit(1);
  });
