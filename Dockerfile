# vkmtp's server in a container, started the way llama.cpp's server images are:
#   docker build -t vkmtp .
#   docker run --rm -p 8080:8080 --device /dev/dri vkmtp -m /models/model.gguf -c 8192   (AMD / Intel: RADV, ANV)
#   docker run --rm -p 8080:8080 --gpus all -e NVIDIA_DRIVER_CAPABILITIES=all vkmtp ...  (NVIDIA's Vulkan driver)
# Without a GPU passed in, Mesa's lavapipe (CPU) runs it. Mount GGUFs with -v /path/to/models:/models.
FROM debian:12-slim

RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv python3-pip ca-certificates \
      libvulkan1 libvulkan-dev mesa-vulkan-drivers libfmt-dev cmake g++ make \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/vkmtp
COPY . .
# the README's set-up: kp built with vkmtp's patch, vkmtp installed into /opt/vkmtp/.venv
RUN VKMTP_SETUP_EXTRAS=none bash tools/setup.sh && rm -rf /root/.cache/pip

EXPOSE 8080
# listen on all interfaces inside the container; publish the port with -p (set --api-key for shared hosts)
ENTRYPOINT ["/opt/vkmtp/.venv/bin/vkmtp", "serve", "--host", "0.0.0.0", "--port", "8080"]
