// emotion_vit on Azure Container Apps: the image from an Azure Container Registry, pulled with a
// user-assigned managed identity (AcrPull, no registry passwords), behind external HTTPS ingress.
//
//   az deployment group create -g RG -f main.bicep -p @main.parameters.json -p acrName=NAME image=emotion-vit:TAG
//
// deploy.sh beside this file creates the group and the registry, builds the image in Azure
// (az acr build) and runs this deployment.

@description('Name of the container app; the other resources are named after it.')
@minLength(2)
@maxLength(26)
param name string = 'emotion-vit'

@description('Azure region.')
param location string = resourceGroup().location

@description('Name of an existing Azure Container Registry in this resource group.')
param acrName string

@description('Image in that registry, repository:tag.')
param image string = 'emotion-vit:latest'

@description('vCPUs per replica (Consumption plan pairs: 0.5/1Gi, 1/2Gi, 1.5/3Gi, 2/4Gi, ..., 4/8Gi).')
param cpu string = '2.0'

@description('Memory per replica. Measured peak: 0.83 GB RSS with 8 concurrent clients; image bombs are refused from their header (bench/load.py).')
param memory string = '4Gi'

@description('Replicas kept running (1: no cold start; the model loads at start-up).')
@minValue(0)
@maxValue(300)
param minReplicas int = 1

@description('Most replicas the HTTP rule scales out to.')
@minValue(1)
@maxValue(300)
param maxReplicas int = 3

@description('Concurrent HTTP requests per replica before another replica is added. A replica runs one model call at a time (its queue holds the rest): 4 = one running and three waiting, about 0.3 s of work.')
@minValue(1)
param concurrentRequests int = 4

@description('Keep adapters on an Azure Files share mounted at the app\'s adapters folder: shared by all replicas, kept across restarts.')
param persistAdapters bool = true

@description('Hugging Face hub model id to serve instead of the embedded model; empty: the embedded model, fully offline.')
param modelId string = ''

var acrPullRoleId = '7f951dda-4ed3-4680-a7ca-43fe172d538d' // built-in role "AcrPull"
var port = 7860
var healthPath = '/gradio_api/info'
var adaptersPath = '/home/user/app/adapters' // EMOTION_VIT_ADAPTERS in the image
var storageName = take(toLower(replace('${name}${uniqueString(resourceGroup().id)}', '-', '')), 24)

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: acrName
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs'
  location: location
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: 30
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = if (persistAdapters) {
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
  }
}

resource adapterShare 'Microsoft.Storage/storageAccounts/fileServices/shares@2023-05-01' = if (persistAdapters) {
  name: '${storageName}/default/adapters'
  properties: {
    shareQuota: 5 // GiB; an adapter is a few KiB to a few hundred KiB
  }
  dependsOn: [
    storage
  ]
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: '${name}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

resource adapterStorage 'Microsoft.App/managedEnvironments/storages@2024-03-01' = if (persistAdapters) {
  parent: environment
  name: 'adapters'
  properties: {
    azureFile: {
      accountName: storageName
      accountKey: persistAdapters ? storage.listKeys().keys[0].value : ''
      shareName: 'adapters'
      accessMode: 'ReadWrite'
    }
  }
  dependsOn: [
    adapterShare
  ]
}

// The identity exists, and may pull, before the app is created: the first revision can pull at once.
resource pullIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${name}-pull'
  location: location
}

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, pullIdentity.id, acrPullRoleId)
  scope: registry
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', acrPullRoleId)
    principalId: pullIdentity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${pullIdentity.id}': {}
    }
  }
  dependsOn: [
    acrPull
    adapterStorage
  ]
  properties: {
    managedEnvironmentId: environment.id
    configuration: {
      // Sticky sessions need single-revision mode.
      activeRevisionsMode: 'Single'
      ingress: {
        external: true
        targetPort: port
        transport: 'auto'
        allowInsecure: false // HTTPS only: browsers give the webcam to HTTPS pages
        // Gradio's queue keeps each session's state (the live stream, face tracks) in one replica:
        // with more than one replica, a browser must keep talking to the replica it started on.
        stickySessions: {
          affinity: 'sticky'
        }
        traffic: [
          {
            latestRevision: true
            weight: 100
          }
        ]
      }
      registries: [
        {
          server: registry.properties.loginServer
          identity: pullIdentity.id
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'emotion-vit'
          image: '${registry.properties.loginServer}/${image}'
          resources: {
            cpu: json(cpu)
            memory: memory
          }
          env: [
            {
              name: 'GRADIO_ANALYTICS_ENABLED'
              value: 'False'
            }
            {
              name: 'EMOTION_VIT_MODEL'
              value: modelId // empty: the model embedded in the image
            }
            {
              name: 'EMOTION_VIT_TRUSTED_PROXIES'
              value: '1' // the ingress appends the client's address to X-Forwarded-For: adapters are counted per network
            }
            {
              name: 'HF_HUB_OFFLINE'
              value: empty(modelId) ? '1' : '0'
            }
          ]
          probes: [
            {
              type: 'Startup' // up to 10 + 10 x 15 s for the model to load
              httpGet: {
                path: healthPath
                port: port
              }
              initialDelaySeconds: 10
              periodSeconds: 15
              timeoutSeconds: 5
              failureThreshold: 10
            }
            {
              type: 'Liveness'
              httpGet: {
                path: healthPath
                port: port
              }
              periodSeconds: 30
              timeoutSeconds: 10
              failureThreshold: 3
            }
            {
              type: 'Readiness' // no traffic until the server answers, and none while it stops answering
              httpGet: {
                path: healthPath
                port: port
              }
              periodSeconds: 10
              timeoutSeconds: 5
              failureThreshold: 3
            }
          ]
          volumeMounts: persistAdapters ? [
            {
              volumeName: 'adapters'
              mountPath: adaptersPath
            }
          ] : []
        }
      ]
      volumes: persistAdapters ? [
        {
          name: 'adapters'
          storageType: 'AzureFile'
          storageName: 'adapters'
          mountOptions: 'uid=1000,gid=1000,dir_mode=0700,file_mode=0600' // an SMB share mounts 0777 otherwise
        }
      ] : []
      scale: {
        minReplicas: minReplicas
        maxReplicas: maxReplicas
        rules: [
          {
            name: 'http-concurrency'
            http: {
              metadata: {
                concurrentRequests: string(concurrentRequests)
              }
            }
          }
        ]
      }
    }
  }
}

@description('The app\'s HTTPS address.')
output url string = 'https://${app.properties.configuration.ingress.fqdn}'
