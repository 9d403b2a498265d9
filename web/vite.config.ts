import { resolve } from 'node:path';
import { defineConfig } from 'vite';

// One page application (Preact): index.html is the shell the server hands out
// for every page path. watch.html is the same shell, kept so that a static
// setup (and the test helpers, which look for it) still finds it; the app
// sends /watch/<slug> on to /c/<slug>. hls.js is split into its own chunk,
// loaded only by the channel page. Hashed assets go under /assets/, which the
// server marks immutable.
export default defineConfig({
  esbuild: {
    jsx: 'automatic',
    jsxImportSource: 'preact',
  },
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    sourcemap: true,
    chunkSizeWarningLimit: 1000,
    rollupOptions: {
      input: {
        index: resolve(__dirname, 'index.html'),
        watch: resolve(__dirname, 'watch.html'),
      },
    },
  },
});
