# edgeshard in a container: any command, e.g.
#   docker build -t edgeshard .
#   docker run -p 8080:8080 -v edgeshard-cache:/var/cache/edgeshard -v edgeshard-key:/var/lib/edgeshard edgeshard \
#     node --origin https://data.example.org/datasets --gateway https://gw.example.org --cache-dir /var/cache/edgeshard \
#     --key-file /var/lib/edgeshard/node-key.json --cache-size 500GB --max-upload 200Mbps --lat 48.85 --lon 2.35
# The TypeScript runs through tsx, so the image keeps the dev dependencies that include it; `node`, `gateway`,
# `settler`, `fetch` and `sim` run from a JavaScript build of their sources (esbuild, no tsx loader thread: ~35 MiB less RSS), made here
# because the user the container runs as cannot write node_modules/.cache.
FROM node:20-bookworm-slim
WORKDIR /opt/edgeshard
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund && npm cache clean --force
COPY . .
RUN npm run compile
RUN mkdir -p /var/cache/edgeshard /var/lib/edgeshard && chown node:node /var/cache/edgeshard /var/lib/edgeshard
USER node
EXPOSE 8080 8443
ENTRYPOINT ["node", "bin/edgeshard.js"]
CMD ["--help"]
