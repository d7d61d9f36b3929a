// Builds the Cornerstone3D viewer bundle into ../static/dist with hashed names and a Vite manifest.
// scripts/build_frontend.py runs this and then writes static/dist/manifest.json (entry -> file + SRI).
import { resolve } from 'node:path';
import { createLogger, defineConfig } from 'vite';

const here = import.meta.dirname;

// The WASM codecs' Emscripten glue mentions Node's fs/path behind a runtime check; Vite stubs them for
// the browser and warns once per import. Those warnings are expected: drop them, keep everything else.
const logger = createLogger();
const warn = logger.warn.bind(logger);
logger.warn = (msg, options) => {
  if (msg.includes('externalized for browser compatibility')) return;
  warn(msg, options);
};

export default defineConfig({
  // Relative base: every chunk, worker and WASM codec is resolved against the importing module's URL,
  // so the same bundle works from our own pages and cross-origin from the Ground Truth worker page.
  base: './',
  publicDir: false,
  logLevel: 'warn',
  customLogger: logger,
  worker: { format: 'es' },
  optimizeDeps: { exclude: ['@cornerstonejs/dicom-image-loader'] },
  build: {
    outDir: resolve(here, '../static/dist'),
    emptyOutDir: true,
    manifest: true,
    target: 'es2022',
    sourcemap: false,
    chunkSizeWarningLimit: 4096,
    assetsInlineLimit: 0,
    rollupOptions: {
      // The viewer entry is also a library (`import { LabelingViewer } from '<viewer entry>'`): keep its
      // export names instead of the minified ones an app build would give it.
      preserveEntrySignatures: 'exports-only',
      input: {
        viewer: resolve(here, 'src/viewer/index.js'),
        'gt-worker': resolve(here, 'src/gt-worker.js'),
        app: resolve(here, 'src/app/main.js'),
        style: resolve(here, 'src/style.css'),
      },
      output: {
        entryFileNames: '[name]-[hash].js',
        chunkFileNames: 'chunks/[name]-[hash].js',
        assetFileNames: 'assets/[name]-[hash][extname]',
      },
    },
  },
});
