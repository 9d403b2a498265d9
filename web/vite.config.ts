import { resolve } from 'node:path';
import { defineConfig } from 'vite';

// Several pages, each an HTML entry; hashed assets go under /assets/, which
// the server marks immutable.
export default defineConfig({
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
