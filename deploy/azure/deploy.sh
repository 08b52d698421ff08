#!/usr/bin/env bash
# Deploy emotion_vit to Azure Container Apps: a resource group, a container registry, the image built
# in Azure from this checkout (az acr build: no local Docker), then main.bicep. Prints the app's URL.
#
#   az login
#   bash deploy/azure/deploy.sh
#   RESOURCE_GROUP=my-rg LOCATION=northeurope MAX_REPLICAS=5 bash deploy/azure/deploy.sh
#
# Settings (environment): RESOURCE_GROUP (emotion-vit), LOCATION (westeurope), APP_NAME (emotion-vit),
# ACR_NAME (globally unique, 5-50 letters and digits; default emotionvit + 10 characters of the
# subscription id), TAG (the git commit, else a timestamp), MIN_REPLICAS (1), MAX_REPLICAS (3),
# CPU (2.0), MEMORY (4Gi), CONCURRENT_REQUESTS (4), EMOTION_VIT_MODEL (a hub model id to serve instead
# of the embedded one; empty: the embedded model).
# Rerunning it builds a new tag and rolls the app to it; the resources are reused.
set -euo pipefail
cd "$(dirname "$0")/../.."

command -v az >/dev/null || { echo "needs the Azure CLI: https://aka.ms/azure-cli, then az login" >&2; exit 1; }
[ -f models/emotion-vit-fer2013/config.json ] ||
  { echo "models/emotion-vit-fer2013/ is missing: the image embeds it (see README)" >&2; exit 1; }

RESOURCE_GROUP=${RESOURCE_GROUP:-emotion-vit}
LOCATION=${LOCATION:-westeurope}
APP_NAME=${APP_NAME:-emotion-vit}
subscription=$(az account show --query id -o tsv)
ACR_NAME=${ACR_NAME:-emotionvit$(echo "$subscription" | tr -d '-' | cut -c1-10)}
TAG=${TAG:-$(git rev-parse --short HEAD 2>/dev/null || date +%Y%m%d%H%M%S)}
IMAGE="emotion-vit:$TAG"

echo "subscription $subscription, group $RESOURCE_GROUP ($LOCATION), registry $ACR_NAME, image $IMAGE"
for namespace in Microsoft.App Microsoft.OperationalInsights Microsoft.ContainerRegistry; do
  az provider register --namespace "$namespace" --wait -o none
done

az group create --name "$RESOURCE_GROUP" --location "$LOCATION" -o none
if ! az acr show --name "$ACR_NAME" --resource-group "$RESOURCE_GROUP" -o none 2>/dev/null; then
  az acr create --name "$ACR_NAME" --resource-group "$RESOURCE_GROUP" --location "$LOCATION" \
    --sku Basic --admin-enabled false -o none
fi

# Built by ACR Tasks from the Dockerfile (the upload honours .dockerignore).
az acr build --registry "$ACR_NAME" --resource-group "$RESOURCE_GROUP" --image "$IMAGE" --file Dockerfile .

url=$(az deployment group create --resource-group "$RESOURCE_GROUP" --name "$APP_NAME" \
  --template-file deploy/azure/main.bicep \
  --parameters @deploy/azure/main.parameters.json \
  --parameters name="$APP_NAME" acrName="$ACR_NAME" image="$IMAGE" modelId="${EMOTION_VIT_MODEL:-}" \
  --parameters minReplicas="${MIN_REPLICAS:-1}" maxReplicas="${MAX_REPLICAS:-3}" concurrentRequests="${CONCURRENT_REQUESTS:-4}" \
  --parameters cpu="${CPU:-2.0}" memory="${MEMORY:-4Gi}" \
  --query properties.outputs.url.value -o tsv)
echo "emotion_vit is deployed: $url"
echo "API: Client(\"$url\").predict(handle_file(\"photo.jpg\"), api_name=\"/analyze\")"
