# One image for the web and the worker. CPU torch by default; for a GPU worker build with
# --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 (the CUDA build of torch 2.13.0).
FROM python:3.11-slim
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt .
RUN pip install --index-url "$TORCH_INDEX" torch==2.13.0 && pip install -r requirements.txt
COPY . .
EXPOSE 8000
CMD ["uvicorn", "chatbot.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--ws", "websockets-sansio"]
