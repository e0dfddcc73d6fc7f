// The single point the deployment rehearsal edits: bump `version` for a new release,
// `healthy: false` for a release whose /health answers 503, `renderOk: false` for one whose
// renders fail (500 RENDER_ERROR) while /health says 200, `failAfterRequests`/`failAfterMs`
// (> 0) for one that starts answering 500 to everything but /health once it has served that
// many requests, or that long after its first one; `renderFailAfter` (> 0) for one whose
// renders alone fail once that many succeeded, `renderHangAfter` (> 0) for one whose renders
// never answer once that many succeeded, `rateLimitPath` for one that answers that path 429
// with Retry-After (a rate limit that sees every client behind Nginx as one).
module.exports = { version: "1.0.0", healthy: true, renderOk: true, failAfterRequests: 0, failAfterMs: 0 };
