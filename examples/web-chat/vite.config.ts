import react from '@vitejs/plugin-react'
import { defineConfig } from 'vite'

// The app is served by zajel-server (`--static-dir dist`) on the API's own origin.
// `npm run dev` proxies the API and the WebSocket to a server on :8080.
export default defineConfig({
  plugins: [react()],
  resolve: { dedupe: ['react', 'react-dom'] },
  server: {
    proxy: {
      '/api': 'http://127.0.0.1:8080',
      '/ws': { target: 'ws://127.0.0.1:8080', ws: true },
    },
  },
})
