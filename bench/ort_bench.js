// onnxruntime's latency on one model, measured as bench/kiln_driver.c `time` measures kiln's: seeded
// random inputs in [-1, 1) at batch BATCH, WARMUP untimed runs, then ITERS timed ones, timing only
// session.run. The session runs sequentially with THREADS intra-op threads, one inter-op thread and
// every graph optimization. Prints one JSON line like kiln_driver's, with the process's CPU time per
// timed run (all threads) beside the wall times.
//
// Usage: node bench/ort_bench.js MODEL.onnx BATCH THREADS WARMUP ITERS
'use strict';
const ort = require('onnxruntime-node');

// splitmix64, seeded: the inputs need not match kiln's bit for bit, only be the same kind of data.
function uniformFill(array, seed) {
  let state = BigInt(seed);
  const mask = (1n << 64n) - 1n;
  for (let i = 0; i < array.length; i++) {
    state = (state + 0x9e3779b97f4a7c15n) & mask;
    let z = state;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & mask;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & mask;
    z ^= z >> 31n;
    array[i] = Number(z >> 40n) / 16777216 * 2 - 1;
  }
}

function feedsFor(session, batch) {
  const feeds = {};
  session.inputMetadata.forEach((meta, i) => {
    if (meta.type !== 'float32') throw new Error(`input ${meta.name} is ${meta.type}, not float32`);
    const dims = meta.shape.map((d, axis) => (axis === 0 ? batch : typeof d === 'number' && d > 0 ? d : 1));
    const data = new Float32Array(dims.reduce((a, b) => a * b, 1));
    uniformFill(data, i + 1);
    feeds[meta.name] = new ort.Tensor('float32', data, dims);
  });
  return feeds;
}

async function main(argv) {
  const [model, batch, threads, warmup, iters] = [argv[0], ...argv.slice(1).map(Number)];
  if (argv.length !== 5 || !(batch >= 1) || !(threads >= 1) || !(warmup >= 0) || !(iters >= 1))
    throw new Error('usage: node bench/ort_bench.js MODEL.onnx BATCH THREADS WARMUP ITERS');
  const session = await ort.InferenceSession.create(model, {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
  const feeds = feedsFor(session, batch);
  for (let i = 0; i < warmup; i++) await session.run(feeds);
  const times = [];
  const cpuStart = process.cpuUsage();
  for (let i = 0; i < iters; i++) {
    const start = process.hrtime.bigint();
    await session.run(feeds);
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  const cpu = process.cpuUsage(cpuStart); // microseconds, all threads of the process
  const mean = times.reduce((a, b) => a + b, 0) / iters;
  times.sort((a, b) => a - b);
  const median = iters % 2 ? times[(iters - 1) / 2] : (times[iters / 2 - 1] + times[iters / 2]) / 2;
  console.log(JSON.stringify({
    batch, threads, iterations: iters, median_ms: +median.toFixed(4), mean_ms: +mean.toFixed(4), min_ms: +times[0].toFixed(4),
    p90_ms: +times[Math.floor(iters * 9 / 10)].toFixed(4), samples_per_second: +(batch * 1e3 / median).toFixed(1),
    cpu_ms_per_run: +((cpu.user + cpu.system) / 1e3 / iters).toFixed(4),
  }));
}

main(process.argv.slice(2)).catch((e) => {
  console.error(`ort_bench: ${e.message}`);
  process.exit(1);
});
