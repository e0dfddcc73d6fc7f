// The single point the deployment rehearsal edits: bump `version` for a new release,
// set `healthy: false` for a release whose /health answers 503.
module.exports = { version: "1.0.0", healthy: true };
